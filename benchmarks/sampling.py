r"""Benchmark: many-chain Langevin sampling of a neural energy, ours vs hand-written JAX vs TorchEBM.

Energy: a ``2 -> 128 -> 128 -> 1`` swish MLP with fixed random weights (float32), the same weights
in every implementation. ``--chains`` chains (default 1024) run ``--num-steps`` steps (default 1000) of

.. math:: x \leftarrow x - \eta\,\nabla_x E(x) + \sqrt{2\eta}\,\varepsilon

Side by side in one run:

- ``sample_chains + ula``: :func:`numpyro_ebm.sample_chains` with :func:`numpyro_ebm.ula`;
- ``sample_chains + mala``: the same with ``blackjax.mala`` (ULA + Metropolis correction);
- ``hand-written JAX``: a plain ``vmap`` (gradient per chain) + ``lax.scan`` ULA loop, one key per
  step and a batched normal draw, jitted as a whole (what one would write without the library);
  and the same for MALA (the proposal's Metropolis-Hastings correction, log density and gradient
  carried);
- ``torchebm LangevinDynamics``: TorchEBM's sampler (PyPI ``torchebm``) on CPU torch, same network
  and step; if torchebm is not importable a hand-written torch ULA loop is used and labelled so.

Each JAX variant is compiled and run once (the compile time is reported separately), then timed
``--repeats`` times, every implementation once per repeat in a shuffled order; the table reports
the best and median time and chain-steps per second (best). The ours / hand-written ratios are
paired: hand time / ours time within each repeat, then the median over the repeats. On a machine
whose speed drifts (a shared VM) that is steadier than a ratio of two best times.

Usage::

    python benchmarks/sampling.py                         # 1024 chains x 1000 steps, CPU
    python benchmarks/sampling.py --chains 65536 --device "H100"   # on a GPU machine
    python benchmarks/sampling.py --out benchmarks/results/sampling.md
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
from _machine import machine_info  # noqa: E402


def make_weights(seed: int = 0, width: int = 128):
    """Fixed random float32 weights of a 2 -> width -> width -> 1 MLP (Glorot-normal-ish)."""
    rng = np.random.default_rng(seed)
    sizes = [(2, width), (width, width), (width, 1)]
    weights = []
    for fan_in, fan_out in sizes:
        w = rng.normal(0.0, np.sqrt(2.0 / (fan_in + fan_out)), (fan_in, fan_out)).astype(np.float32)
        b = rng.normal(0.0, 0.1, (fan_out,)).astype(np.float32)
        weights.append((w, b))
    return weights


# ----------------------------------------------------------------------------------------- JAX
def jax_energy(weights):
    import jax
    import jax.numpy as jnp

    params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in weights]

    def energy(x):
        """``(..., 2) -> (...)``; a confining 0.5*|x|^2/16 keeps the chains from running away."""
        h = x
        for w, b in params[:-1]:
            h = jax.nn.swish(h @ w + b)
        w, b = params[-1]
        return (h @ w + b)[..., 0] + jnp.sum(x**2, -1) / 32.0

    return energy


def timed(fn, *args):
    """Seconds for one call of ``fn(*args)``, waiting for JAX's asynchronous results."""
    import jax

    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def hand_written_mala(energy, step_size, num_steps):
    """Plain JAX MALA: the ULA proposal, its Metropolis-Hastings correction with the Gaussian
    transition densities, one key per step and batched draws, the log density and gradient
    carried (what one would write without the library)."""
    import jax
    import jax.numpy as jnp

    value_and_grad = jax.vmap(jax.value_and_grad(lambda x: -energy(x)))

    def log_q(to, frm, grad_frm):  # log N(to; frm + h grad, 2h) up to a constant
        return -jnp.sum((to - frm - step_size * grad_frm) ** 2, -1) / (4.0 * step_size)

    @jax.jit
    def run(key, x0):
        def step(carry, k):
            x, logp, grad = carry
            k_noise, k_accept = jax.random.split(k)
            noise = jax.random.normal(k_noise, x.shape, x.dtype)
            y = x + step_size * grad + jnp.sqrt(2.0 * step_size) * noise
            logp_y, grad_y = value_and_grad(y)
            log_ratio = logp_y - logp + log_q(x, y, grad_y) - log_q(y, x, grad)
            accept = jnp.log(jax.random.uniform(k_accept, logp.shape, x.dtype)) < log_ratio
            x = jnp.where(accept[:, None], y, x)
            return (x, jnp.where(accept, logp_y, logp), jnp.where(accept[:, None], grad_y, grad)), None

        carry, _ = jax.lax.scan(step, (x0, *value_and_grad(x0)), jax.random.split(key, num_steps))
        return carry[0]

    return run


def hand_written_ula(energy, step_size, num_steps):
    """Plain JAX ULA: ``vmap`` of the per-chain gradient inside a ``lax.scan`` over steps."""
    import jax
    import jax.numpy as jnp

    grad_logp = jax.vmap(jax.grad(lambda x: -energy(x)))

    @jax.jit
    def run(key, x0):
        def step(x, k):
            noise = jax.random.normal(k, x.shape, x.dtype)
            return x + step_size * grad_logp(x) + jnp.sqrt(2.0 * step_size) * noise, None

        x, _ = jax.lax.scan(step, x0, jax.random.split(key, num_steps))
        return x

    return run


# --------------------------------------------------------------------------------------- torch
def torch_runner(weights, step_size, num_steps, threads):
    """TorchEBM's LangevinDynamics on the same weights (or a labelled hand-written torch loop)."""
    import torch

    torch.set_num_threads(threads)
    tw = [(torch.from_numpy(w.copy()), torch.from_numpy(b.copy())) for w, b in weights]

    class MLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList(
                [torch.nn.Linear(w.shape[0], w.shape[1]) for w, _ in tw]
            )
            with torch.no_grad():
                for layer, (w, b) in zip(self.layers, tw):
                    layer.weight.copy_(w.T)
                    layer.bias.copy_(b)

        def forward(self, x):
            h = x
            for layer in self.layers[:-1]:
                h = torch.nn.functional.silu(layer(h))
            return self.layers[-1](h)[..., 0] + (x**2).sum(-1) / 32.0

    try:
        import torchebm
        from torchebm.core import BaseModel
        from torchebm.samplers import LangevinDynamics

        class Energy(BaseModel):
            def __init__(self):
                super().__init__()
                self.net = MLP()

            def forward(self, x):
                return self.net(x)

        model = Energy()
        sampler = LangevinDynamics(model, step_size=step_size, noise_scale=1.0)

        def run(x0):
            torch.set_num_threads(threads)
            return sampler.sample(x=x0.clone(), n_steps=num_steps)

        return run, f"torchebm {torchebm.__version__} LangevinDynamics", torch.__version__
    except ImportError:
        net = MLP()
        for p in net.parameters():
            p.requires_grad_(False)

        def run(x0):
            torch.set_num_threads(threads)
            x = x0.clone()
            scale = (2.0 * step_size) ** 0.5
            for _ in range(num_steps):
                x.requires_grad_(True)
                (g,) = torch.autograd.grad(net(x).sum(), x)
                x = (x.detach() - step_size * g + scale * torch.randn_like(x)).detach()
            return x

        return run, "hand-written torch ULA loop (torchebm NOT installed)", torch.__version__


# ---------------------------------------------------------------------------------------- main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chains", type=int, default=1024)
    parser.add_argument("--num-steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--step-size", type=float, default=1e-2)
    parser.add_argument("--device", default=None, help="label for the table (default: detected)")
    parser.add_argument("--no-torch", action="store_true", help="skip the torch comparison")
    parser.add_argument(
        "--torch-threads",
        default=None,
        help="comma-separated torch thread counts, one row each (default: 1 and nproc); the "
        "ratio uses the fastest torch row",
    )
    parser.add_argument("--out", default=None, help="write a markdown snippet here")
    args = parser.parse_args(argv)

    import blackjax
    import jax
    import jax.numpy as jnp

    import numpyro_ebm

    weights = make_weights()
    energy = jax_energy(weights)
    logdensity = lambda x: -energy(x)
    h, n, s = args.step_size, args.chains, args.num_steps
    x0_np = np.random.default_rng(1).normal(size=(n, 2)).astype(np.float32)
    x0 = jnp.asarray(x0_np)
    key = jax.random.key(0)
    backend = jax.default_backend()
    jax_device = str(jax.devices()[0].device_kind)
    device = args.device or (jax_device if backend != "cpu" else "CPU")

    ula_kernel = functools.partial(numpyro_ebm.ula, step_size=h)
    mala_kernel = functools.partial(blackjax.mala, step_size=h)
    mala_one_draw = functools.partial(numpyro_ebm.mala, step_size=h)

    def ours(kernel):
        return lambda k, x: numpyro_ebm.sample_chains(k, logdensity, kernel, x, s).positions

    impls = [
        ("sample_chains + numpyro_ebm.ula", ours(ula_kernel), (key, x0)),
        ("sample_chains + blackjax.mala", ours(mala_kernel), (key, x0)),
        ("sample_chains + numpyro_ebm.mala", ours(mala_one_draw), (key, x0)),
        ("hand-written JAX (vmap + scan) ULA", hand_written_ula(energy, h, s), (key, x0)),
        ("hand-written JAX (vmap + scan) MALA", hand_written_mala(energy, h, s), (key, x0)),
    ]
    torch_label, torch_version = None, None
    if not args.no_torch:
        import torch

        nproc = os.cpu_count() or 1
        thread_counts = sorted({1, nproc})
        if args.torch_threads:
            thread_counts = [int(t) for t in args.torch_threads.split(",")]
        for threads in thread_counts:
            run, torch_label, torch_version = torch_runner(weights, h, s, threads)
            label = torch_label + f" (CPU, {threads} thread{'s' if threads > 1 else ''})"
            impls.append((label, run, (torch.from_numpy(x0_np),)))

    # First call (JAX: trace + compile + run), then the repeats interleaved round-robin so that
    # load changes on a shared machine hit every implementation alike.
    first = {}
    for name, fn, fargs in impls:
        first[name] = timed(fn, *fargs)
        print(f"  {name}: first call {first[name]:.2f}s", flush=True)
    times = {name: [] for name, _, _ in impls}
    order = np.random.default_rng(0)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    for r in range(args.repeats):
        for i in order.permutation(len(impls)):  # shuffled: no implementation always goes first
            name, fn, fargs = impls[i]
            times[name].append(timed(fn, *fargs))
        print(f"  repeat {r + 1}/{args.repeats} done", flush=True)
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = [(name, first[name], times[name]) for name, _, _ in impls]

    # Sanity: the samplers agree in distribution (mean final energy +- its standard error).
    mean_e = {}
    for name, fn, fargs in impls:
        out = fn(*fargs)
        e = np.asarray(energy(jnp.asarray(out.detach().numpy() if hasattr(out, "detach") else out)))
        short = {
            "sample_chains + numpyro_ebm.ula": "ours-ula",
            "sample_chains + blackjax.mala": "ours-mala",
            "sample_chains + numpyro_ebm.mala": "ours-mala1",
            "hand-written JAX (vmap + scan) ULA": "hand-ula",
            "hand-written JAX (vmap + scan) MALA": "hand-mala",
        }.get(name, "torch")
        if short not in mean_e:
            mean_e[short] = (float(e.mean()), float(e.std() / np.sqrt(e.size)))

    best = {name: min(t) for name, _, t in rows}
    repeat_times = {name: t for name, _, t in rows}
    ours_s = best["sample_chains + numpyro_ebm.ula"]

    def paired(ours_name, hand_name):
        """Median and quartiles over the repeats of hand time / ours time within one repeat:
        the two ran seconds apart, so a slow phase of the machine hits both."""
        r = np.array(repeat_times[hand_name]) / np.array(repeat_times[ours_name])
        return np.median(r), np.percentile(r, 25), np.percentile(r, 75)
    lines = [
        f"| implementation ({n} chains x {s} steps, {device}) | first call (compile) s | best s "
        "| median s | chain-steps/s (best) | time / ours-ULA time |",
        "|---|---|---|---|---|---|",
    ]
    for name, first, times in rows:
        b, med = min(times), statistics.median(times)
        lines.append(
            f"| {name} | {first:.2f} | {b:.3f} | {med:.3f} | {n * s / b:,.0f} | {b / ours_s:.2f}x |"
        )
    summary = []
    for kind, ours_kernel in (("ULA", "numpyro_ebm.ula"), ("MALA", "blackjax.mala"),
                              ("MALA", "numpyro_ebm.mala")):
        ours_name = f"sample_chains + {ours_kernel}"
        hand_name = f"hand-written JAX (vmap + scan) {kind}"
        med, q1, q3 = paired(ours_name, hand_name)
        summary.append(
            f"- sample_chains+{ours_kernel} speed / hand-written JAX {kind}: median {med:.2f}x "
            f"over the {args.repeats} repeats (quartiles {q1:.2f}-{q3:.2f}), best-to-best "
            f"{best[hand_name] / best[ours_name]:.2f}x (target >= 0.95x)"
        )
    torch_rows = [r for r in rows if not r[0].startswith(("sample_chains", "hand-written"))]
    if torch_rows:
        torch_name, torch_s = min(((r[0], min(r[2])) for r in torch_rows), key=lambda r: r[1])
        summary.append(
            f"- sample_chains+ula speed / fastest torch row ({torch_name}): "
            f"{torch_s / ours_s:.1f}x (target >= 3x)"
        )
    summary.append(
        "- mean final energy (sanity, should agree within MC error): "
        + ", ".join(f"{k} {m:.3f} +- {se:.3f}" for k, (m, se) in mean_e.items())
    )
    table = "\n".join(lines)
    print()
    print(table)
    print("\n".join(summary))

    if args.out:
        cpu, nproc = machine_info()
        date = subprocess.run(["date"], capture_output=True, text=True).stdout.strip()
        import numpyro

        versions = (
            f"python {platform.python_version()}, jax {jax.__version__} ({backend}), "
            f"numpyro {numpyro.__version__}, blackjax {blackjax.__version__}, "
            f"numpyro_ebm {numpyro_ebm.__version__}"
        )
        if torch_version:
            versions += f", torch {torch_version}"
        text = "\n".join(
            [
                "## Sampling: many chains of Langevin on an MLP energy",
                "",
                f"`python benchmarks/sampling.py {' '.join(argv or sys.argv[1:])}`".replace(
                    " `", "`"
                ),
                "",
                f"- date: {date}",
                f"- machine: {cpu}, nproc={nproc}, {platform.system()} {platform.machine()}; "
                f"JAX device: {jax_device}; 1-min load average {load_before:.1f} before and "
                f"{load_after:.1f} after the timed repeats (other jobs share the machine when > "
                f"nproc: compare rows of one run, not runs)",
                f"- versions: {versions}",
                "- energy: MLP 2 -> 128 -> 128 -> 1 (swish, fixed random float32 weights) "
                f"+ |x|^2/32; ULA and MALA step {h}, noise sqrt(2*step); timings after a warm-up "
                f"call, best/median of {args.repeats} repeats (each repeat runs every "
                "implementation once, in a shuffled order); the ratios are paired within a "
                "repeat",
                "",
                table,
                "",
                *summary,
                "",
            ]
        )
        with open(args.out, "w") as f:
            f.write(text)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
