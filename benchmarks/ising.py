"""Benchmark: 64x64 periodic Ising, checkerboard block Gibbs, 1000 sweeps, beta = 0.4.

Side by side in one run, for 1 chain and 32 chains:

* ours via ``numpyro_ebm.sample_chains`` (vmap over chains, scan over steps, flip rate and
  log density tracked),
* ours, raw sweep (``ising.kernel(params).step`` on the batched lattice, no vmap, in a scan),
* the same raw sweep with ``jax.random.uniform(key, shape, minval=-1, maxval=1)`` in place of the
  hand-written ``numpyro_ebm.models.lattice.uniform_pm1`` (the A/B that decides whether that
  hand-written RNG stays: it does only while this row is more than 10% slower),
* a hand-written JAX sublattice update (neighbour sums by ``jnp.roll``, or by slices of a
  wrap-padded copy; sigmoid + where on the full lattice per colour, jit + scan),
* ``thrml`` (Extropic's block Gibbs library): ``IsingEBM`` on the same torus with the two
  checkerboard colours as blocks, ``sample_states`` over 1000 sweeps (vmap over chains).

Times exclude compilation (each program is run once first) and are the best of ``--repeats``
rounds, the samplers interleaved within each round.
Also printed: the mean energy per site of the final states of every sampler (they sample the same
model, so these must agree within Monte Carlo error; Onsager's infinite-lattice value at
beta = 0.4 is -1.1037 for reference; the finite 64x64 torus is close to it).

Usage: ``python benchmarks/ising.py [--num-steps 1000] [--repeats 3] [--no-thrml]``; writes
``benchmarks/results/ising.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from importlib import metadata

import jax
import jax.numpy as jnp
import numpy as np

import numpyro_ebm
from numpyro_ebm.models import Ising, lattice, onsager_energy_per_site

L, BETA = 64, 0.4
ISING = Ising((L, L))
PARAMS = ISING.init_params(beta=BETA)


# ---------------------------------------------------------------- hand-written JAX baseline
def make_hand_written(num_steps):
    parity = (np.add.outer(np.arange(L), np.arange(L)) % 2) == 0

    def half(key, s, mask):
        nb = (jnp.roll(s, 1, -1) + jnp.roll(s, -1, -1) + jnp.roll(s, 1, -2) + jnp.roll(s, -1, -2))
        p_up = jax.nn.sigmoid(2.0 * BETA * nb)
        new = jnp.where(jax.random.uniform(key, s.shape) < p_up, 1.0, -1.0)
        return jnp.where(mask, new, s)

    @jax.jit
    def run(key, s):
        def sweep(s, key):
            k1, k2 = jax.random.split(key)
            return half(k2, half(k1, s, parity), ~parity), None

        return jax.lax.scan(sweep, s, jax.random.split(key, num_steps))[0]

    return run


def make_hand_written_pad(num_steps):
    """The same update with neighbour sums from one wrap-padded copy (XLA on CPU compiles chained
    ``jnp.roll``s poorly)."""
    parity = (np.add.outer(np.arange(L), np.arange(L)) % 2) == 0

    def half(key, s, mask):
        p = jnp.pad(s, [(0, 0)] * (s.ndim - 2) + [(1, 1), (1, 1)], mode="wrap")
        nb = p[..., 1:-1, :-2] + p[..., 1:-1, 2:] + p[..., :-2, 1:-1] + p[..., 2:, 1:-1]
        p_up = jax.nn.sigmoid(2.0 * BETA * nb)
        new = jnp.where(jax.random.uniform(key, s.shape) < p_up, 1.0, -1.0)
        return jnp.where(mask, new, s)

    @jax.jit
    def run(key, s):
        def sweep(s, key):
            k1, k2 = jax.random.split(key)
            return half(k2, half(k1, s, parity), ~parity), None

        return jax.lax.scan(sweep, s, jax.random.split(key, num_steps))[0]

    return run


# ---------------------------------------------------------------- ours
def make_ours_sample_chains(num_steps):
    kernel = ISING.kernel(PARAMS)

    def run(key, s):
        return numpyro_ebm.sample_chains(key, None, kernel, s, num_steps).positions

    return run


def make_ours_raw(num_steps):
    kernel = ISING.kernel(PARAMS)  # its step takes the batch of lattices directly

    @jax.jit
    def run(key, s):
        state = kernel.init(s)
        state, _ = jax.lax.scan(lambda st, k: (kernel.step(k, st)[0], None), state,
                                jax.random.split(key, num_steps))
        return state.position

    return run


def make_ours_stock_rng(num_steps):
    """The raw sweep with ``jax.random.uniform`` instead of ``lattice.uniform_pm1`` (swapped in
    while the program is traced, on its first call)."""
    raw = make_ours_raw(num_steps)

    def stock(rng_key, shape, dtype):
        return jax.random.uniform(rng_key, shape, dtype, minval=-1.0, maxval=1.0)

    def run(key, s):
        saved, lattice.uniform_pm1 = lattice.uniform_pm1, stock
        try:
            return raw(key, s)
        finally:
            lattice.uniform_pm1 = saved

    return run


# ---------------------------------------------------------------- thrml
def make_thrml(num_steps, num_chains):
    import thrml
    from thrml.models import IsingEBM, IsingSamplingProgram

    nodes = [thrml.SpinNode() for _ in range(L * L)]
    idx = np.arange(L * L).reshape(L, L)
    edges = [(nodes[idx[i, j]], nodes[idx[i, (j + 1) % L]]) for i in range(L) for j in range(L)]
    edges += [(nodes[idx[i, j]], nodes[idx[(i + 1) % L, j]]) for i in range(L) for j in range(L)]
    model = IsingEBM(
        nodes, edges, jnp.zeros(L * L), jnp.ones(len(edges)), jnp.asarray(BETA, jnp.float32)
    )
    parity = (np.add.outer(np.arange(L), np.arange(L)) % 2 == 0).ravel()
    even = [nodes[i] for i in np.flatnonzero(parity)]
    odd = [nodes[i] for i in np.flatnonzero(~parity)]
    blocks = [thrml.Block(even), thrml.Block(odd)]
    program = IsingSamplingProgram(model, blocks, clamped_blocks=[])
    # one "step" of thrml's schedule updates every free block once = one sweep
    schedule = thrml.SamplingSchedule(n_warmup=num_steps - 1, n_samples=1, steps_per_sample=1)
    all_nodes = [thrml.Block(nodes)]
    even_idx, odd_idx = np.flatnonzero(parity), np.flatnonzero(~parity)

    def one_chain(key, s_flat):
        init = [s_flat[even_idx] > 0, s_flat[odd_idx] > 0]
        out = thrml.sample_states(key, program, schedule, init, [], all_nodes)
        return jnp.where(out[0][-1], 1.0, -1.0)

    @jax.jit
    def run(key, s):
        keys = jax.random.split(key, num_chains)
        flat = jnp.reshape(s, (num_chains, L * L))
        return jax.vmap(one_chain)(keys, flat).reshape(num_chains, L, L)

    return run


def timed_interleaved(methods, key, s, repeats):
    """Compile and run each method once, then time ``repeats`` rounds, the methods interleaved in
    each round (fair under a fluctuating machine load); best time per method."""
    outs = {name: jax.block_until_ready(run(key, s)) for name, run in methods.items()}
    best = dict.fromkeys(methods, np.inf)
    for r in range(repeats):
        for name, run in methods.items():
            t0 = time.perf_counter()
            outs[name] = jax.block_until_ready(run(jax.random.fold_in(key, r + 1), s))
            best[name] = min(best[name], time.perf_counter() - t0)
    return best, outs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-steps", type=int, default=1000, help="sweeps (kernel steps) per chain")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chains", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--no-thrml", action="store_true")
    args = parser.parse_args()

    load_start = os.getloadavg()[0]
    ising, params = ISING, PARAMS
    rows = []
    for num_chains in args.chains:
        s0 = ising.init_spins(jax.random.key(0), num_chains)
        methods = {
            "ours (sample_chains)": make_ours_sample_chains(args.num_steps),
            "ours (raw sweep)": make_ours_raw(args.num_steps),
            "ours (raw, jax.random.uniform)": make_ours_stock_rng(args.num_steps),
            "hand-written JAX (roll)": make_hand_written(args.num_steps),
            "hand-written JAX (pad)": make_hand_written_pad(args.num_steps),
        }
        if not args.no_thrml:
            methods["thrml"] = make_thrml(args.num_steps, num_chains)
        best, outs = timed_interleaved(methods, jax.random.key(1), s0, args.repeats)
        for name in methods:
            seconds, out = best[name], outs[name]
            e = float(jnp.mean(ising.energy_per_site(params, out))) / BETA  # J = 1 units
            sweeps_per_s = args.num_steps * num_chains / seconds
            rows.append((num_chains, name, seconds, sweeps_per_s, sweeps_per_s * L * L, e))
            print(f"{num_chains:>3} chains  {name:<30} {seconds:8.3f} s  "
                  f"{sweeps_per_s:12.0f} sweeps/s  {sweeps_per_s * L * L / 1e6:9.2f} Mspins/s  "
                  f"E/site {e:+.4f}", flush=True)

    def ratio(num_chains, a, b):
        t = {name: sec for c, name, sec, *_ in rows if c == num_chains}
        return t[b] / t[a] if a in t and b in t else float("nan")

    lines = []
    for num_chains in args.chains:
        for other in ("thrml", "hand-written JAX (roll)", "hand-written JAX (pad)",
                      "ours (raw, jax.random.uniform)"):
            for ours in ("ours (sample_chains)", "ours (raw sweep)"):
                r = ratio(num_chains, ours, other)
                if np.isfinite(r):
                    lines.append(f"| {num_chains} | {ours} vs {other} | {r:.2f}x |")
    print("\nspeed-up (time of the other / time of ours):")
    print("\n".join(lines))

    try:
        thrml_version = metadata.version("thrml")
    except metadata.PackageNotFoundError:
        thrml_version = "not installed"
    device = jax.devices()[0]
    md = [
        "## Ising 64x64, checkerboard Gibbs (benchmarks/ising.py)",
        "",
        f"Date: {datetime.date.today().isoformat()}. Machine: {platform.platform()}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible; JAX device "
        f"{device.platform} ({device.device_kind}). Versions: jax {jax.__version__}, "
        f"numpyro-ebm {numpyro_ebm.__version__}, thrml {thrml_version}. Load average at the "
        f"start / end of the run: {load_start:.1f} / {os.getloadavg()[0]:.1f} (other jobs share "
        "the machine; the samplers are interleaved within each timing round so they see the same "
        "load, but absolute rates vary between runs).",
        "",
        f"Periodic 64x64 lattice, J = 1, h = 0, beta = {BETA}, {args.num_steps} sweeps from random "
        f"spins, float32; best of {args.repeats} runs after a compile run. E/site: mean energy per "
        f"site of the final states (one lattice for 1 chain, so only a sanity check; Onsager, "
        f"infinite lattice: {float(onsager_energy_per_site(BETA)):+.4f}). Speed-up = time of the "
        "other sampler / time of ours (> 1: ours is faster).",
        "",
        "| chains | sampler | time (s) | sweeps/s | Mspins/s | E/site |",
        "|---|---|---|---|---|---|",
    ]
    for num_chains, name, sec, sps, spins, e in rows:
        md.append(f"| {num_chains} | {name} | {sec:.3f} | {sps:.0f} | {spins / 1e6:.2f} | {e:+.4f} |")
    md += ["", "| chains | comparison | speed-up |", "|---|---|---|", *lines, ""]
    out_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "ising.md")
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w") as f:
        f.write("\n".join(md))
    print(f"\nwrote {out_path}")


if __name__ == "__main__":
    main()
