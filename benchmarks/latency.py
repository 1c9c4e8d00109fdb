"""Benchmark: time to the first result and compiled per-update time, ours vs hand-written JAX.

Each workload runs in a fresh Python process (so compilation is really first), three times:

* ``cold``: an empty persistent compilation cache (``jax_compilation_cache_dir``): what a user sees
  the first time a script runs;
* ``cached``: the same cache again: what a user sees when rerunning the script;
* inside each process the workload runs ``1 + --repeats`` times with the same shapes: the first
  call includes tracing and compilation, the others are the compiled run alone (the best of them,
  over both processes, / number of updates is the compiled per-update time; the quickstart runs
  once more, not ``--repeats`` times).

Workloads (each with a hand-written JAX twin computing the same math, where one exists):

* ``rbm``: RBM (64 visible, 16 hidden) CD-1 on binarized digits-sized data, 1000 SGD updates of
  batch 32: ``SVI`` + ``ContrastiveDivergence(None)`` in a ``fori_loop`` vs a hand-written CD-1
  ``lax.scan``, each initializing its parameters inside the timed program;
* ``pcd``: a 2 -> 64 -> 64 -> 1 MLP energy on eight_gaussians, PCD with 128 persistent ULA chains
  x 10 steps, 300 Adam updates of batch 128: ``SVI`` + ``PersistentContrastiveDivergence`` vs a
  hand-written PCD loop;
* ``ais``: ``logz_ais`` of a 2-D Gaussian-mixture energy, 256 chains x 200 temperatures of MALA
  vs a hand-written AIS ``lax.scan``;
* ``mcmc``: ``numpyro.infer.MCMC(BlackJAXKernel(mala))`` on a 2-D banana EBM, 4 vectorized chains x
  (500 warmup + 2000 samples) vs a hand-written ``blackjax.mala`` ``lax.scan`` (warmup included)
  and vs NumPyro's own ``HMC`` with one leapfrog step (MALA) in the same ``MCMC`` driver (whose
  ``run`` recompiles on every call, so its second call is not a compiled run alone), and vs
  ``ours-chains``: the same MALA chains by ``numpyro_ebm.sample_chains`` on the energy, without
  NumPyro's driver;
* ``ours-nr`` (rbm, pcd): ours with the estimator's ``report_nonfinite=False``: the training
  program then holds no host callback, which the persistent cache cannot store;
* ``quickstart``: the quickstart's two-moons PCD training section (``--quickstart-updates``
  updates), ours only.

Targets (issue 14): compiled per-update time within 1.1x of hand-written; total time to the first
result within 1.5x of the hand-written one including its compilation.

Usage::

    python benchmarks/latency.py --out benchmarks/results/latency.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from statistics import median

from _machine import machine_info  # noqa: E402

WORKLOADS = ("rbm", "pcd", "ais", "mcmc", "quickstart")


# ----------------------------------------------------------------------------- workers
def _timed(fn):
    import jax

    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t0


def rbm(impl):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from numpyro.infer import SVI

    from numpyro_ebm import ContrastiveDivergence, no_guide
    from numpyro_ebm.models import RBM

    steps, batch, lr = 1000, 32, 0.05
    data = jnp.asarray((np.random.default_rng(0).random((1437, 64)) > 0.6).astype(np.float32))
    idx = jnp.asarray(np.random.default_rng(1).integers(0, 1437, (steps, batch)))
    model = RBM(64, 16)
    if impl in ("ours", "ours-nr"):  # ours-nr: no non-finite report, a cacheable program
        loss = ContrastiveDivergence(None, 1, report_nonfinite=impl == "ours")
        svi = SVI(model.model, no_guide, optax.sgd(lr), loss=loss)

        @jax.jit
        def run(key):
            state = svi.init(key, data[idx[0]])
            return jax.lax.fori_loop(0, steps, lambda i, s: svi.update(s, data[idx[i]])[0], state)

        return lambda seed: run(jax.random.key(seed)), steps

    @jax.jit
    def run_hand(key):
        # the parameters are initialized inside the timed program, as `svi.init` does in ours
        # (until 2026-12-04 they were drawn eagerly before the clock started)
        key, init_key = jax.random.split(key)
        init = model.init_params(init_key)

        def step(p, inputs):
            key, rows = inputs
            k1, k2 = jax.random.split(key)
            v0 = data[rows]
            ph0 = jax.nn.sigmoid(v0 @ p["W"] + p["b"])
            h = jax.random.bernoulli(k1, ph0).astype(jnp.float32)
            v1 = jax.random.bernoulli(k2, jax.nn.sigmoid(h @ p["W"].T + p["a"])).astype(
                jnp.float32)
            ph1 = jax.nn.sigmoid(v1 @ p["W"] + p["b"])
            g = {"W": v0.T @ ph0 - v1.T @ ph1, "a": (v0 - v1).sum(0), "b": (ph0 - ph1).sum(0)}
            return jax.tree.map(lambda x, d: x + lr / batch * d, p, g), None

        return jax.lax.scan(step, init, (jax.random.split(key, steps), idx))[0]

    return lambda seed: run_hand(jax.random.key(seed)), steps


def _mlp(width=64):
    import flax.linen as nn

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.swish(nn.Dense(width)(x))
            h = nn.swish(nn.Dense(width)(h))
            return nn.Dense(1)(h)[..., 0] + 0.5 * (x**2).sum(-1) / 16.0

    return MLP()


def pcd(impl):
    import functools

    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    import optax
    from numpyro.contrib.module import flax_module
    from numpyro.infer import SVI

    import numpyro_ebm

    steps, batch, chains, k, h = 300, 128, 128, 10, 1e-2
    data = numpyro_ebm.datasets.eight_gaussians().sample(jax.random.key(0), (4096,))
    idx = jax.random.randint(jax.random.key(1), (steps, batch), 0, 4096)
    net = _mlp()
    box = dist.Uniform(-4.0 * jnp.ones(2), 4.0 * jnp.ones(2)).to_event(1)
    if impl in ("ours", "ours-nr"):

        def model(x):
            energy = flax_module("energy", net, input_shape=(1, 2))
            numpyro.sample("x", numpyro_ebm.Unnormalized(energy, (2,)), obs=x)

        loss = numpyro_ebm.PersistentContrastiveDivergence(
            functools.partial(numpyro_ebm.ula, step_size=h), num_steps=k, num_chains=chains,
            reinit_prob=0.0, init_dist=box, report_nonfinite=impl == "ours")
        svi = SVI(model, loss.guide, optax.adam(1e-3), loss=loss)

        @jax.jit
        def run(key):
            state = svi.init(key, data[idx[0]])
            return jax.lax.fori_loop(0, steps, lambda i, s: svi.update(s, data[idx[i]])[0], state)

        return lambda seed: run(jax.random.key(seed)), steps
    optim = optax.adam(1e-3)

    @jax.jit
    def run_hand(key):
        k_init, k_chain, k_steps = jax.random.split(key, 3)
        params = net.init(k_init, jnp.zeros((1, 2)))
        x = box.sample(k_chain, (chains,))

        def energy(p, x):
            return net.apply(p, x)

        grad_x = jax.grad(lambda x, p: -energy(p, x).sum())

        def step(carry, inputs):
            p, opt, x = carry
            key, rows = inputs

            def langevin(x, kk):
                noise = jax.random.normal(kk, x.shape)
                return x + h * grad_x(x, p) + jnp.sqrt(2 * h) * noise, None

            x, _ = jax.lax.scan(langevin, x, jax.random.split(key, k))
            x = jax.lax.stop_gradient(x)
            g = jax.grad(lambda p: energy(p, data[rows]).mean() - energy(p, x).mean())(p)
            updates, opt = optim.update(g, opt, p)
            return (optax.apply_updates(p, updates), opt, x), None

        carry = (params, optim.init(params), x)
        return jax.lax.scan(step, carry, (jax.random.split(k_steps, steps), idx))[0]

    return lambda seed: run_hand(jax.random.key(seed)), steps


def _mixture_energy(x):
    import jax.numpy as jnp
    from jax.scipy.special import logsumexp

    d1 = jnp.sum((x - 2.0) ** 2, -1)
    d2 = jnp.sum((x + 2.0) ** 2, -1)
    return -logsumexp(jnp.stack([-0.5 * d1, -0.5 * d2]), axis=0)


def ais(impl):
    import functools

    import blackjax
    import jax
    import jax.numpy as jnp
    import numpyro.distributions as dist

    import numpyro_ebm

    chains, temps, step = 256, 200, 0.3
    base = dist.Normal(jnp.zeros(2), 3.0).to_event(1)
    betas = numpyro_ebm.temperature_schedule(temps, "sigmoid")
    kernel = functools.partial(blackjax.mala, step_size=step)
    if impl == "ours":
        def run(seed):
            return numpyro_ebm.logz_ais(jax.random.key(seed), _mixture_energy, base, kernel,
                                        num_chains=chains, betas=betas).log_Z

        return run, temps

    def f(beta, x):
        return (1 - beta) * base.log_prob(x) - beta * _mixture_energy(x)

    @jax.jit
    def run_hand(key):
        k0, k1 = jax.random.split(key)
        x = base.sample(k0, (chains,))

        def anneal(carry, inputs):
            x, logw = carry
            b0, b1, key = inputs
            logw = logw + f(b1, x) - f(b0, x)
            algo = blackjax.mala(functools.partial(f, b1), step)
            state = jax.vmap(algo.init)(x)
            state, _ = jax.vmap(algo.step)(jax.random.split(key, chains), state)
            return (state.position, logw), None

        (x, logw), _ = jax.lax.scan(
            anneal, (x, jnp.zeros(chains)), (betas[:-1], betas[1:], jax.random.split(k1, temps)))
        return jax.scipy.special.logsumexp(logw) - jnp.log(chains)  # the base is normalized

    return lambda seed: run_hand(jax.random.key(seed)), temps


def _banana(x):
    return 0.5 * x[..., 0] ** 2 + 0.5 * ((x[..., 1] - 0.5 * x[..., 0] ** 2) / 0.5) ** 2


def mcmc(impl):
    import blackjax
    import jax
    import jax.numpy as jnp
    import numpyro
    from numpyro.infer import MCMC

    import numpyro_ebm

    warmup, samples, chains, step = 500, 2000, 4, 0.3
    if impl == "ours":

        def model():
            numpyro.sample("x", numpyro_ebm.Unnormalized(_banana, (2,)))

        kernel = numpyro_ebm.BlackJAXKernel(blackjax.mala, model=model, step_size=step)
        m = MCMC(kernel, num_warmup=warmup, num_samples=samples, num_chains=chains,
                 chain_method="vectorized", progress_bar=False)

        def run(seed):  # the same MCMC object: its second run reuses the compiled program
            m.run(jax.random.key(seed), init_params={"x": jnp.zeros((chains, 2))})
            return m.get_samples()["x"]

        return run, warmup + samples
    if impl == "numpyro":  # NumPyro's own HMC with one leapfrog step (MALA) in the same MCMC
        from numpyro.infer import HMC

        def model():
            numpyro.sample("x", numpyro_ebm.Unnormalized(_banana, (2,)))

        m = MCMC(HMC(model, step_size=step, num_steps=1, adapt_step_size=False,
                     adapt_mass_matrix=False), num_warmup=warmup, num_samples=samples,
                 num_chains=chains, chain_method="vectorized", progress_bar=False)

        def run_numpyro(seed):
            m.run(jax.random.key(seed), init_params={"x": jnp.zeros((chains, 2))})
            return m.get_samples()["x"]

        return run_numpyro, warmup + samples
    if impl == "ours-chains":  # the library's own path, without NumPyro's MCMC driver
        import functools

        kernel = functools.partial(blackjax.mala, step_size=step)

        def logdensity(x):
            return -_banana(x)

        def run_chains(seed):
            result = numpyro_ebm.sample_chains(
                jax.random.key(seed), logdensity, kernel, jnp.zeros((chains, 2)),
                warmup + samples, num_samples=samples,
            )
            return result.samples

        return run_chains, warmup + samples
    algo = blackjax.mala(lambda x: -_banana(x), step)

    @jax.jit
    def run_hand(key):
        state = jax.vmap(algo.init)(jnp.zeros((chains, 2)))

        def one(state, key):
            state, _ = jax.vmap(algo.step)(jax.random.split(key, chains), state)
            return state, state.position

        _, xs = jax.lax.scan(one, state, jax.random.split(key, warmup + samples))
        return xs[warmup:]

    return lambda seed: run_hand(jax.random.key(seed)), warmup + samples


def quickstart(impl, num_updates):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
    import quickstart as qs  # noqa: E402

    def run(seed):
        import functools

        import jax
        import numpyro.distributions as dist
        import optax
        from numpyro.infer import SVI

        import numpyro_ebm

        truth = numpyro_ebm.datasets.two_moons()
        data = truth.sample(jax.random.key(seed), (20_000,))
        pcd = numpyro_ebm.PersistentContrastiveDivergence(
            functools.partial(numpyro_ebm.ula, step_size=3e-3), num_steps=20, num_chains=256,
            buffer_size=8192, reinit_prob=0.05,
            init_dist=dist.Uniform(-4.5, 4.5).expand([2]).to_event(1), alpha=0.1)
        svi = SVI(qs.ebm_model, pcd.guide, optax.adam(1e-3), loss=pcd)
        return svi.run(jax.random.key(seed), num_updates, data, progress_bar=False).params

    return run, num_updates


def worker(name, impl, quickstart_updates, repeats=5):
    t0 = time.perf_counter()
    if name == "quickstart":
        run, n = quickstart(impl, quickstart_updates)
    else:
        run, n = globals()[name](impl)
    setup = time.perf_counter() - t0
    first = _timed(lambda: run(0))
    # the compiled run: best of `repeats` calls (a 1-call figure swung 2x on a shared VM)
    repeats = 1 if name == "quickstart" else repeats
    second = min(_timed(lambda r=r: run(1 + r)) for r in range(repeats))
    return {"setup": setup, "first": first, "second": second, "num_updates": n}


def interleaved(name, impls, rounds):
    """Compiled run time of every impl of one workload, measured in one process, the impls in
    turn in each of ``rounds`` rounds (best per impl): a slow spell of a shared machine then hits
    every impl alike, which separate processes minutes apart do not ensure."""
    runs = {impl: globals()[name](impl) for impl in impls}
    for run, _ in runs.values():
        _timed(lambda: run(0))
    times = {impl: [] for impl in impls}
    for r in range(rounds):
        order = list(runs.items()) if r % 2 == 0 else list(runs.items())[::-1]
        for impl, (run, _) in order:
            times[impl].append(_timed(lambda: run(1 + r)))
    return {impl: {"second": min(times[impl]), "rounds": times[impl],
                   "num_updates": runs[impl][1]} for impl in impls}


# ----------------------------------------------------------------------------- driver
def _median_run(results):
    """One process's figures from several: the median first call and import, the best run."""
    out = dict(results[0])
    out["first"] = median([r["first"] for r in results])
    out["import"] = median([r["import"] for r in results])
    out["second"] = min(r["second"] for r in results)
    return out


def _in_subprocess(call, cache_dir):
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    code = (
        "import json, sys, time; t0 = time.perf_counter(); import jax; "
        f"jax.config.update('jax_compilation_cache_dir', {cache_dir!r}); "
        "jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0); "
        "jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1); "
        f"sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
        "import latency; imp = time.perf_counter() - t0; "
        f"r = latency.{call}; r['import'] = imp; "
        "print('RESULT' + json.dumps(r))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT"):
            return json.loads(line[6:])
    raise RuntimeError(f"{call} failed:\n{out.stderr[-3000:]}")


def run_in_subprocess(name, impl, cache_dir, quickstart_updates, repeats):
    return _in_subprocess(f"worker({name!r}, {impl!r}, {quickstart_updates}, {repeats})",
                          cache_dir)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--quickstart-updates", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5,
                        help="compiled runs per process; `run` is the best of both processes'")
    parser.add_argument("--rounds", type=int, default=10,
                        help="rounds of the in-process interleaved per-update timing (0: skip)")
    parser.add_argument("--cold-rounds", type=int, default=1,
                        help="cold + cached process pairs per impl, impls in turn; the rows "
                             "give medians, and `paired cold` the median of ours / hand per round")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    load0 = os.getloadavg()[0]
    rows, inter = [], {}
    for name in args.workloads.split(","):
        impls = {"quickstart": ["ours"], "mcmc": ["ours", "ours-chains", "hand", "numpyro"],
                 "rbm": ["ours", "ours-nr", "hand"], "pcd": ["ours", "ours-nr", "hand"]}.get(
            name, ["ours", "hand"])
        # --cold-rounds rounds, every impl once per round (a fresh cache each time): separate
        # processes spread by +-0.3x in the ratios of one round, so the rows give medians
        got = {impl: [] for impl in impls}
        for _ in range(args.cold_rounds):
            for impl in impls:
                with tempfile.TemporaryDirectory() as cache:
                    cold = run_in_subprocess(name, impl, cache, args.quickstart_updates,
                                             args.repeats)
                    warm = run_in_subprocess(name, impl, cache, args.quickstart_updates,
                                             args.repeats)
                got[impl].append((cold, warm))
                print(name, impl, json.dumps(cold), json.dumps(warm), flush=True)
        for impl in impls:
            cold, warm = (_median_run([c[i] for c in got[impl]]) for i in (0, 1))
            cold["second"] = warm["second"] = min(cold["second"], warm["second"])
            cold["rounds"] = [c[0]["first"] for c in got[impl]]
            rows.append((name, impl, cold, warm))
        together = [impl for impl in impls if impl != "numpyro"]  # NumPyro's run recompiles
        if name != "quickstart" and args.rounds:
            with tempfile.TemporaryDirectory() as cache:
                inter[name] = _in_subprocess(f"interleaved({name!r}, {together!r}, "
                                             f"{args.rounds})", cache)
            print(name, "interleaved", json.dumps(inter[name]), flush=True)
    load1 = os.getloadavg()[0]

    import jax
    import numpyro

    import numpyro_ebm

    cpu, nproc = machine_info()
    lines = [
        "## Latency: time to the first result, and compiled per-update time",
        "",
        "`python benchmarks/latency.py" + (f" --workloads {args.workloads}"
                                           if args.workloads != ",".join(WORKLOADS) else "")
        + (f" --cold-rounds {args.cold_rounds}" if args.cold_rounds != 1 else "")
        + (f" --rounds {args.rounds}" if args.rounds != 10 else "") + "`",
        "",
        f"- date: {time.strftime('%a %b %d %H:%M:%S UTC %Y', time.gmtime())}",
        f"- machine: {cpu}, nproc={nproc}, {platform.system()} {platform.machine()}; "
        f"1-min load {load0:.2f} at the start, {load1:.2f} at the end",
        f"- versions: python {platform.python_version()}, jax {jax.__version__}, numpyro "
        f"{numpyro.__version__}, numpyro_ebm {numpyro_ebm.__version__}",
        "- each row: a fresh process; `first` = first call (trace + compile + run), `run` = the "
        f"compiled call, best of {args.repeats} calls in each of the cold and the cached "
        "process (the quickstart: of 1), `cold`/`cached` = empty / warm persistent compilation cache; "
        "`per update` = run / number of updates (steps); `ours-nr`: the estimator built with "
        "`report_nonfinite=False` (no host callback, so the persistent cache can store it)",
        "",
        "- `interleaved`: the compiled run again, every impl of a workload in one process, in turn "
        f"(the order reversed every other round), best of {args.rounds} rounds; `paired`: the "
        "median over the rounds of ours / hand within a round, the per-update ratio to read "
        "(separate processes minutes apart meet different spells of a shared machine)",
        "",
        f"- cold rounds: {args.cold_rounds} (every impl's cold + cached pair once per round, in "
        "turn); with more than one, `first` and `import` are medians over the rounds and "
        "`paired cold first / hand` is the median (range) over the rounds of ours / hand",
        "",
        "| workload | impl | import s | first s (cold) | first s (cached) | run s | per update µs "
        "| first / hand (cold) | first / hand (cached) | per update / hand | interleaved per "
        "update µs | interleaved / hand | paired / hand | paired cold first / hand |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    hand = {name: (cold, warm) for name, impl, cold, warm in rows if impl == "hand"}
    for name, impl, cold, warm in rows:
        per = 1e6 * cold["second"] / cold["num_updates"]
        ratio = ["", "", ""]
        if impl in ("ours", "ours-nr", "ours-chains") and name in hand:
            hc, hw = hand[name]
            ratio = [f"{cold['first'] / hc['first']:.2f}x", f"{warm['first'] / hw['first']:.2f}x",
                     f"{cold['second'] / hc['second']:.2f}x"]
        both = inter.get(name, {})
        if impl in both:
            mine = both[impl]["second"] / both[impl]["num_updates"]
            ratio.append(f"{1e6 * mine:.0f}")
            hand_run = both.get("hand")
            ratio.append(f"{both[impl]['second'] / hand_run['second']:.2f}x"
                         if hand_run and impl != "hand" else "")
            if hand_run and impl != "hand" and "rounds" in both[impl]:
                paired = [a / b for a, b in zip(both[impl]["rounds"], hand_run["rounds"])]
                ratio.append(f"{sorted(paired)[len(paired) // 2]:.2f}x")
            else:
                ratio.append("")
        else:
            ratio += ["", "", ""]
        if impl in ("ours", "ours-nr", "ours-chains") and name in hand and len(cold["rounds"]) > 1:
            paired = sorted(a / b for a, b in zip(cold["rounds"], hand[name][0]["rounds"]))
            ratio.append(f"{median(paired):.2f}x ({paired[0]:.2f}-{paired[-1]:.2f})")
        else:
            ratio.append("")
        lines.append(
            f"| {name} | {impl} | {cold['import']:.2f} | {cold['first']:.2f} | "
            f"{warm['first']:.2f} | {cold['second']:.3f} | {per:.0f} | " + " | ".join(ratio) + " |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
