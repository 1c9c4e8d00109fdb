r"""Benchmark: everything that matters on an accelerator, in one command, in a few minutes.

On whatever JAX device is present (GPU, TPU, else CPU), side by side in one run:

1. ``sample_chains`` + :func:`numpyro_ebm.ula` vs the hand-written JAX ULA of
   ``benchmarks/sampling.py`` (same MLP energy, ``make_weights`` / ``jax_energy``; same step, chains
   and steps) for 10^4 to 10^7 chains (``--chains``); target >= 0.95x hand-written;
2. the 64x64 Ising checkerboard sweep (``benchmarks/ising.py``): ``sample_chains`` with the
   model's exact sampler vs the hand-written JAX sweep and vs ``thrml`` (skipped with a note when
   thrml is not importable);
3. one compiled PCD training step (``PersistentContrastiveDivergence`` + ULA in
   ``SVI.update``) on the MLP energy vs a hand-written JAX step of the same math (ULA chains, CD
   gradient, Adam);
4. TorchEBM's ``LangevinDynamics`` (else a hand-written torch ULA loop, labelled so) on the same
   weights, when torch with CUDA is importable (skipped with a note otherwise).

Every JAX program is compiled and run once first; times are the best of ``--repeats`` interleaved
rounds. Writes a markdown table with the device name (``--out``, default
``benchmarks/results/gpu.md``). ``--smoke`` runs tiny sizes on any machine (a check that the
script works, not a measurement; it writes nothing unless ``--out`` is given).

Usage::

    python benchmarks/gpu.py                 # on a GPU machine: ~3-5 minutes
    python benchmarks/gpu.py --smoke --out /tmp/gpu.md   # on a CPU: seconds
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import sys
import time
from importlib import metadata

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _machine import machine_info  # noqa: E402
from sampling import hand_written_mala, hand_written_ula, jax_energy, make_weights  # noqa: E402

import numpyro_ebm  # noqa: E402

STEP_SIZE = 1e-2


def best_of(methods: dict, repeats: int) -> tuple[dict, dict]:
    """``methods``: name -> zero-argument callable returning JAX arrays (or a torch result with a
    ``sync`` done inside). First call of each (compile), then ``repeats`` interleaved rounds;
    returns ``({name: first-call s}, {name: best s})``."""
    first, best = {}, dict.fromkeys(methods, float("inf"))
    for name, fn in methods.items():
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        first[name] = time.perf_counter() - t0
    for _ in range(repeats):
        for name, fn in methods.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            best[name] = min(best[name], time.perf_counter() - t0)
    return first, best


# ---------------------------------------------------------------- 1. ULA, many chains
def _hand_name(kernel_name: str) -> str:
    """The hand-written twin of a kernel's row: ``ula`` -> ULA, any MALA -> MALA."""
    return f"hand-written JAX {'MALA' if kernel_name.endswith('mala') else 'ULA'}"


def bench_ula(chain_counts, num_steps, repeats):
    """ULA and MALA: ``sample_chains`` with ``numpyro_ebm.ula`` / ``blackjax.mala`` /
    ``numpyro_ebm.mala`` against the hand-written twins of ``benchmarks/sampling.py``."""
    import blackjax

    energy = jax_energy(make_weights())
    logdensity = lambda x: -energy(x)  # noqa: E731
    kernels = {"ula": functools.partial(numpyro_ebm.ula, step_size=STEP_SIZE),
               "mala": functools.partial(blackjax.mala, step_size=STEP_SIZE),
               "numpyro_ebm.mala": functools.partial(numpyro_ebm.mala, step_size=STEP_SIZE)}
    hands = {"ula": hand_written_ula(energy, STEP_SIZE, num_steps),
             "mala": hand_written_mala(energy, STEP_SIZE, num_steps)}
    in_jit = jax.jit(lambda key, x0: numpyro_ebm.sample_chains(
        key, logdensity, kernels["ula"], x0, num_steps).positions)
    rows = []
    for n in chain_counts:
        x0 = jax.random.normal(jax.random.key(1), (n, 2))
        key = jax.random.key(0)
        methods = {}
        for name, kernel in kernels.items():
            methods[f"sample_chains + {name}"] = lambda x0=x0, kernel=kernel: (
                numpyro_ebm.sample_chains(key, logdensity, kernel, x0, num_steps).positions)
            if name == "ula":  # the same call inside the user's own jit: no per-call host work
                methods["sample_chains + ula inside jax.jit"] = functools.partial(in_jit, key, x0)
            twin = _hand_name(name)
            if twin not in methods:
                hand = hands[twin.split()[-1].lower()]
                methods[twin] = lambda x0=x0, hand=hand: hand(key, x0)
        # short runs (a few ms) are noisier: more rounds for them
        first, best = best_of(methods, repeats if n >= 10**6 else max(repeats, 10))
        for name in methods:
            rows.append((n, name, first[name], best[name], n * num_steps / best[name]))
        print(f"  {n:>9,} chains: " + ", ".join(
            f"{k} {best[_hand_name(k)] / best[f'sample_chains + {k}']:.2f}x "
            f"({best[f'sample_chains + {k}']:.4f}s)" for k in kernels), flush=True)
    return rows


# ---------------------------------------------------------------- 2. Ising vs thrml
def bench_ising(chain_counts, num_steps, repeats, use_thrml):
    import ising as ib  # benchmarks/ising.py

    rows, notes = [], []
    if use_thrml:
        try:
            import thrml  # noqa: F401
        except ImportError:
            use_thrml = False
            notes.append("thrml not importable: the thrml rows are skipped")
    for n in chain_counts:
        s0 = ib.ISING.init_spins(jax.random.key(0), n)
        key = jax.random.key(1)
        runs = {
            "ours (sample_chains)": ib.make_ours_sample_chains(num_steps),
            "ours (raw sweep)": ib.make_ours_raw(num_steps),
            "hand-written JAX (pad)": ib.make_hand_written_pad(num_steps),
        }
        if use_thrml:
            runs["thrml"] = ib.make_thrml(num_steps, n)
        methods = {name: functools.partial(run, key, s0) for name, run in runs.items()}
        first, best = best_of(methods, repeats)
        for name in methods:
            rows.append((n, name, first[name], best[name],
                         n * num_steps * ib.L * ib.L / best[name] / 1e6))
        print(f"  Ising {n:>6} chains: " + ", ".join(
            f"{name} {best[name]:.4f}s" for name in methods), flush=True)
    return rows, notes


# ---------------------------------------------------------------- 3. PCD training step
def bench_pcd(num_chains, num_steps, batch_size, repeats):
    import numpyro
    import numpyro.distributions as dist
    import optax
    from numpyro.infer import SVI

    width = 128
    data = np.random.default_rng(0).normal(size=(8192, 2)).astype(np.float32)
    data[:, 1] += 0.5 * data[:, 0] ** 2  # a banana
    init = [np.asarray(w) for wb in make_weights(width=width) for w in wb]

    def mlp(params, x):
        w1, b1, w2, b2, w3, b3 = params
        h = jax.nn.swish(x @ w1 + b1)
        h = jax.nn.swish(h @ w2 + b2)
        return (h @ w3 + b3)[..., 0] + jnp.sum(x**2, -1) / 32.0

    def model(data):
        params = [numpyro.param(f"w{i}", jnp.asarray(p)) for i, p in enumerate(init)]
        with numpyro.plate("data", data.shape[0], subsample_size=batch_size):
            batch = numpyro.subsample(data, event_dim=1)
            numpyro.sample("x", numpyro_ebm.Unnormalized(lambda x: mlp(params, x), (2,)),
                           obs=batch)

    box = dist.Uniform(-4.0, 4.0).expand([2]).to_event(1)
    optim = optax.adam(1e-3)

    def make(report):
        pcd = numpyro_ebm.PersistentContrastiveDivergence(
            functools.partial(numpyro_ebm.ula, step_size=STEP_SIZE), num_steps=num_steps,
            num_chains=num_chains, reinit_prob=0.05, init_dist=box, report_nonfinite=report)
        svi = SVI(model, pcd.guide, optim, loss=pcd)
        return svi.init(jax.random.key(0), data), jax.jit(svi.update)

    state, update = make(True)
    state_quiet, update_quiet = make(False)

    # the same math by hand: ULA on persistent chains, restarts, CD loss gradient, Adam
    params0 = [jnp.asarray(p) for p in init]
    grad_logp = jax.vmap(jax.grad(lambda p, x: -mlp(p, x), argnums=1), in_axes=(None, 0))
    data_j = jnp.asarray(data)

    @jax.jit
    def hand_step(carry, key):
        params, opt_state, chains = carry
        k_batch, k_re, k_fresh, k_ula = jax.random.split(key, 4)
        batch = data_j[jax.random.choice(k_batch, data_j.shape[0], (batch_size,), replace=False)]
        restart = jax.random.bernoulli(k_re, 0.05, (num_chains, 1))
        fresh = jax.random.uniform(k_fresh, chains.shape, minval=-4.0, maxval=4.0)
        x = jnp.where(restart, fresh, chains)

        def ula_step(x, k):
            noise = jax.random.normal(k, x.shape)
            return x + STEP_SIZE * grad_logp(params, x) + jnp.sqrt(2 * STEP_SIZE) * noise, None

        x, _ = jax.lax.scan(ula_step, x, jax.random.split(k_ula, num_steps))
        x = jax.lax.stop_gradient(x)
        loss, grads = jax.value_and_grad(
            lambda p: jnp.mean(mlp(p, batch)) - jnp.mean(mlp(p, x)))(params)
        updates, opt_state = optim.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, x), loss

    hand_carry = (params0, optim.init(params0), box.sample(jax.random.key(1), (num_chains,)))
    box_state = {"svi": state, "quiet": state_quiet, "hand": hand_carry, "i": 0}

    def ours():
        box_state["svi"], loss = update(box_state["svi"], data)
        return loss

    def ours_quiet():
        box_state["quiet"], loss = update_quiet(box_state["quiet"], data)
        return loss

    def hand():
        box_state["i"] += 1
        box_state["hand"], loss = hand_step(box_state["hand"], jax.random.key(box_state["i"]))
        return loss

    first, best = best_of({"PCD step (SVI.update)": ours,
                           "PCD step, report_nonfinite=False": ours_quiet,
                           "hand-written JAX PCD step": hand}, repeats)
    rows = [(name, first[name], best[name]) for name in first]
    print("  PCD: " + ", ".join(f"{n} {b:.4f}s" for n, _, b in rows), flush=True)
    return rows


# ---------------------------------------------------------------- 4. torch on CUDA
def bench_torch(chain_counts, num_steps, repeats, allow_cpu=False):
    """TorchEBM's LangevinDynamics (or a hand-written torch ULA loop) on CUDA, same weights.
    ``allow_cpu`` (``--smoke`` only) runs the same code on torch's CPU device, as a check."""
    try:
        import torch
    except ImportError:
        return [], ["torch not importable: the TorchEBM rows are skipped"]
    if torch.cuda.is_available():
        dev = torch.device("cuda")
    elif allow_cpu:
        dev = torch.device("cpu")
    else:
        return [], [f"torch {torch.__version__} has no CUDA device: the TorchEBM rows are skipped"]
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    weights = make_weights()
    layers = [(torch.from_numpy(w.copy()).to(dev), torch.from_numpy(b.copy()).to(dev))
              for w, b in weights]

    class MLP(torch.nn.Module):
        def forward(self, x):
            h = x
            for w, b in layers[:-1]:
                h = torch.nn.functional.silu(h @ w + b)
            w, b = layers[-1]
            return (h @ w + b)[..., 0] + (x**2).sum(-1) / 32.0

    net = MLP().to(dev)
    label = "hand-written torch ULA loop (torchebm NOT installed)"
    sample = None
    try:
        import torchebm
        from torchebm.core import BaseModel
        from torchebm.samplers import LangevinDynamics

        class Energy(BaseModel):
            def forward(self, x):
                return net(x)

        model = Energy().to(dev)
        try:
            sampler = LangevinDynamics(model, step_size=STEP_SIZE, noise_scale=1.0, device=dev)
        except TypeError:
            sampler = LangevinDynamics(model, step_size=STEP_SIZE, noise_scale=1.0)
        sample = lambda x0: sampler.sample(x=x0.clone(), n_steps=num_steps)  # noqa: E731
        label = f"torchebm {torchebm.__version__} LangevinDynamics"
    except ImportError:
        pass
    if sample is None:
        scale = (2.0 * STEP_SIZE) ** 0.5

        def sample(x0):
            x = x0.clone()
            for _ in range(num_steps):
                x.requires_grad_(True)
                (g,) = torch.autograd.grad(net(x).sum(), x)
                x = (x.detach() - STEP_SIZE * g + scale * torch.randn_like(x)).detach()
            return x

    rows = []
    for n in chain_counts:
        x0 = torch.randn(n, 2, device=dev)
        times = []
        for _ in range(repeats + 1):
            sync()
            t0 = time.perf_counter()
            sample(x0)
            sync()
            times.append(time.perf_counter() - t0)
        rows.append((n, label, times[0], min(times[1:]), n * num_steps / min(times[1:])))
        print(f"  torch {n:>9,} chains: {min(times[1:]):.4f}s", flush=True)
    where = (f"CUDA device {torch.cuda.get_device_name(0)}" if dev.type == "cuda"
             else "torch's CPU device (smoke check only)")
    return rows, [f"torch {torch.__version__}, {label}, {where}"]


# ---------------------------------------------------------------- main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CPU check)")
    parser.add_argument("--chains", type=int, nargs="+", default=None,
                        help="ULA chain counts (default 10^4 .. 10^7; smoke: 100 1000)")
    parser.add_argument("--num-steps", type=int, default=None, help="ULA steps (default 100)")
    parser.add_argument("--ising-chains", type=int, nargs="+", default=None)
    parser.add_argument("--ising-steps", type=int, default=None)
    parser.add_argument("--pcd-chains", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--no-thrml", action="store_true")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--out", default=None,
                        help="markdown output (default benchmarks/results/gpu.md; none in --smoke)")
    args = parser.parse_args(argv)
    smoke = args.smoke
    chains = args.chains or ([100, 1000] if smoke else [10**4, 10**5, 10**6, 10**7])
    num_steps = args.num_steps or (5 if smoke else 100)
    ising_chains = args.ising_chains or ([1, 4] if smoke else [1, 32, 1024])
    ising_steps = args.ising_steps or (5 if smoke else 200)
    pcd_chains = args.pcd_chains or (64 if smoke else 65536)
    repeats = args.repeats or (1 if smoke else 3)
    out = args.out or (None if smoke else os.path.join(HERE, "results", "gpu.md"))

    load_start = os.getloadavg()[0]
    t_start = time.perf_counter()
    device = jax.devices()[0]
    device_name = (f"CPU ({machine_info()[0]})" if device.platform == "cpu"
                   else f"{device.platform.upper()} {getattr(device, 'device_kind', '')}".strip())
    print(f"device: {device_name} ({jax.device_count()} visible)", flush=True)

    notes = []

    def guarded(name, fn, empty):
        # one failing section (an API change in a peer library, say) must not cost the others:
        # a GPU session has minutes, not retries
        try:
            return fn()
        except Exception as err:  # noqa: BLE001
            notes.append(f"{name} FAILED: {type(err).__name__}: {str(err).splitlines()[0][:300]}")
            print(f"  {notes[-1]}", flush=True)
            return empty

    ula_rows = guarded("ULA", lambda: bench_ula(chains, num_steps, repeats), [])
    ising_rows, ising_notes = guarded(
        "Ising", lambda: bench_ising(ising_chains, ising_steps, repeats, not args.no_thrml),
        ([], []))
    notes += ising_notes
    pcd_rows = guarded("PCD", lambda: bench_pcd(pcd_chains, 20, 256, max(repeats, 10)), [])
    torch_rows = []
    if args.no_torch:
        notes.append("torch skipped (--no-torch)")
    else:
        torch_rows, torch_notes = guarded(
            "torch", lambda: bench_torch(chains, num_steps, repeats, allow_cpu=smoke), ([], []))
        notes += torch_notes

    md = [f"## Accelerator: {device_name} (benchmarks/gpu.py{' --smoke' if smoke else ''})", ""]
    cpu, nproc = machine_info()
    try:
        thrml_version = metadata.version("thrml")
    except metadata.PackageNotFoundError:
        thrml_version = "not installed"
    peers = []
    for pkg in ("numpyro", "blackjax", "flax", "optax"):
        try:
            peers.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            peers.append(f"{pkg} not installed")
    md += [
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}; host: {cpu}, "
        f"nproc={nproc}, {platform.system()}; JAX device: {device_name} x {jax.device_count()}; "
        f"1-minute load at the start {load_start:.2f}; whole run {time.perf_counter() - t_start:.0f} s",
        f"- versions: python {platform.python_version()}, jax {jax.__version__}, numpyro_ebm "
        f"{numpyro_ebm.__version__}, {', '.join(peers)}, thrml {thrml_version}",
        f"- times: best of {repeats} interleaved rounds after a first (compile) call; "
        + ("SMOKE sizes: not a measurement" if smoke else "float32"),
        "",
        f"### ULA and MALA on the MLP energy, {num_steps} steps (target: ours >= 0.95x "
        "hand-written)",
        "",
        "| chains | implementation | first call s | best s | chain-steps/s | speed vs hand-written |",
        "|---|---|---|---|---|---|",
    ]
    by = {(n, name): best for n, name, _, best, _ in ula_rows}
    for n, name, first, best, rate in ula_rows + torch_rows:
        ratio = ""
        if name.startswith("sample_chains + "):
            hand = by.get((n, _hand_name(name.split(' + ')[1].split()[0])))
            ratio = f"{hand / best:.2f}x" if hand else ""
        elif not name.startswith("hand-written JAX") and by.get((n, "sample_chains + ula")):
            ratio = f"ours (ULA) is {best / by[(n, 'sample_chains + ula')]:.2f}x as fast"
        md.append(f"| {n:,} | {name} | {first:.2f} | {best:.4f} | {rate:,.0f} | {ratio} |")
    md += ["", f"### Ising 64x64 checkerboard sweep, beta 0.4, {ising_steps} sweeps", "",
           "| chains | sampler | first call s | best s | Mspins/s | time / ours (sample_chains) |",
           "|---|---|---|---|---|---|"]
    iby = {(n, name): best for n, name, _, best, _ in ising_rows}
    for n, name, first, best, rate in ising_rows:
        rel = best / iby[(n, "ours (sample_chains)")]
        md.append(f"| {n} | {name} | {first:.2f} | {best:.4f} | {rate:.1f} | {rel:.2f} |")
    md += ["", f"### One PCD training step: {pcd_chains} chains x 20 ULA steps, batch 256, MLP "
           "energy, Adam", "", "| implementation | first call s | best s | time / hand-written |",
           "|---|---|---|---|"]
    hand_pcd = {name: best for name, _, best in pcd_rows}.get("hand-written JAX PCD step")
    for name, first, best in pcd_rows:
        rel = f"{best / hand_pcd:.2f}x" if hand_pcd else ""
        md.append(f"| {name} | {first:.2f} | {best:.4f} | {rel} |")
    if notes:
        md += [""] + [f"- note: {n}" for n in notes]
    text = "\n".join(md) + "\n"
    print()
    print(text)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            f.write(text)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
