"""Benchmark: RBM block-Gibbs sweeps, ``sample_chains`` with the model's own sampler vs hand-written.

An RBM with random weights (``W ~ N(0, 0.1^2)``, biases 0) over ``--visible`` binary units and
``--hidden`` hidden units; ``--chains`` chains run ``--num-steps`` sweeps ``v -> h -> v``:

* ``sample_chains(rbm.distribution(params), None, ...)``: the library's exact sampler (the RBM's
  annealing path at beta = 1), one chain per ``vmap`` lane, its own key per chain and step;
* ``hand-written JAX``: the batched sweep one would write, ``h = bernoulli(sigmoid(v W + b))``,
  ``v = bernoulli(sigmoid(h W^T + a))`` on the ``(chains, V)`` matrix, one key per step, in a
  jitted ``lax.scan``.

Target (issue 14): ours >= 0.95x the hand-written sweep rate.

Usage::

    python benchmarks/gibbs_sweeps.py --out benchmarks/results/gibbs_sweeps.md
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from _machine import machine_info  # noqa: E402


def timed(fn):
    import jax

    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--visible", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--chains", type=int, default=1024)
    parser.add_argument("--num-steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    load0 = os.getloadavg()[0]

    import jax
    import jax.numpy as jnp
    import numpy as np
    import numpyro

    import numpyro_ebm
    from numpyro_ebm.models import RBM

    V, H, C, S = args.visible, args.hidden, args.chains, args.num_steps
    rbm = RBM(V, H)
    params = {"W": 0.1 * jax.random.normal(jax.random.key(0), (V, H)),
              "a": jnp.zeros(V), "b": jnp.zeros(H)}
    dist = rbm.distribution(params)
    v0 = jax.random.bernoulli(jax.random.key(1), 0.5, (C, V)).astype(jnp.float32)

    def ours(seed):
        return numpyro_ebm.sample_chains(jax.random.key(seed), dist, None, v0, S).positions

    @jax.jit
    def hand(key):
        W, a, b = params["W"], params["a"], params["b"]

        def sweep(v, k):
            kh, kv = jax.random.split(k)
            h = jax.random.bernoulli(kh, jax.nn.sigmoid(v @ W + b)).astype(v.dtype)
            v = jax.random.bernoulli(kv, jax.nn.sigmoid(h @ W.T + a)).astype(v.dtype)
            return v, None

        return jax.lax.scan(sweep, v0, jax.random.split(key, S))[0]

    impls = [("sample_chains(rbm.distribution(params), None)", lambda: ours(1)),
             ("hand-written JAX (batched sweep, lax.scan)", lambda: hand(jax.random.key(1)))]
    first = {name: timed(fn) for name, fn in impls}
    # the repeats alternate the two (ABBA...), so a slow phase of the machine hits both alike
    times = {name: [] for name, _ in impls}
    for r in range(args.repeats):
        for name, fn in (impls if r % 2 == 0 else impls[::-1]):
            times[name].append(timed(fn))
    rows = []
    for name, _ in impls:
        best, median = min(times[name]), sorted(times[name])[len(times[name]) // 2]
        rows.append((name, first[name], best, median, C * S / best))
        print(f"{name}: first {first[name]:.2f} s, best {best:.3f} s, {C * S / best:,.0f} "
              "sweeps/s", flush=True)
    ratio = rows[0][4] / rows[1][4]
    paired = np.array(times[impls[1][0]]) / np.array(times[impls[0][0]])
    cpu, nproc = machine_info()
    lines = [
        "## RBM block-Gibbs sweeps: the model's own sampler vs a hand-written sweep",
        "",
        f"`python benchmarks/gibbs_sweeps.py --visible {V} --hidden {H} --chains {C} "
        f"--num-steps {S}`",
        "",
        f"- date: {time.strftime('%a %b %d %H:%M:%S UTC %Y', time.gmtime())}",
        f"- machine: {cpu}, nproc={nproc}, {platform.system()} {platform.machine()}; JAX device: "
        f"{jax.devices()[0].device_kind}; 1-min load {load0:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end",
        f"- versions: python {platform.python_version()}, jax {jax.__version__}, numpyro "
        f"{numpyro.__version__}, numpyro_ebm {numpyro_ebm.__version__}",
        "",
        f"| implementation ({C} chains x {S} sweeps, V={V}, H={H}) | first call s | best s | "
        "median s | sweeps/s (best) |",
        "|---|---|---|---|---|",
        *[f"| {n} | {f:.2f} | {b:.3f} | {m:.3f} | {r:,.0f} |" for n, f, b, m, r in rows],
        "",
        f"- ours / hand-written sweep rate: median {np.median(paired):.2f}x over the "
        f"{args.repeats} repeats (quartiles {np.percentile(paired, 25):.2f}-"
        f"{np.percentile(paired, 75):.2f}; each repeat runs both, alternating which goes first), "
        f"best-to-best {ratio:.2f}x (target >= 0.95x)",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
