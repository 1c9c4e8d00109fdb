r"""Benchmark: time and peak memory of ``sample_chains`` from 10^3 to 10^7 chains.

Two workloads, each at every chain count ``10^3, 10^4, ...`` up to ``--max-chains`` and at two
step counts (``--num-steps``, default 20 and 40):

* ``mlp``: ULA (:func:`numpyro_ebm.ula`, step 1e-2) on the MLP energy of ``benchmarks/sampling.py``
  (``make_weights`` / ``jax_energy``: 2 -> 128 -> 128 -> 1 swish + |x|^2/32), observables = the
  energy;
* ``ising``: ``numpyro_ebm.models.Ising((32, 32))`` at beta = 0.4 through
  ``ising.distribution(params)`` with ``kernel=None`` (its exact checkerboard Gibbs sweep),
  observables = magnetization and energy per site.

Both keep no samples (``keep_samples=False``): the observables are streamed into per-chain running
moments over the last half of the steps (``num_samples = num_steps // 2``), so memory should be
O(chains) and flat in ``num_steps``. Chain counts above ``--batch-above`` run with
``chain_batch_size=--batch-above`` (identical results, bounded working memory); where the
estimated memory exceeds ``--max-memory-gb`` the batch is divided by 10 until it fits, and a
configuration that still does not fit is skipped and listed.

Each configuration runs in a fresh subprocess: after imports and setup its resident memory is
read (``resource.getrusage(...).ru_maxrss``, the baseline), then the run is called once (trace +
compile + run: "first call") and once more (timed: "run"); "peak" is the process's peak resident
memory (or, on an accelerator, JAX's ``peak_bytes_in_use`` of the device) and "peak - base" the
part the run added. The table reports chain-steps/s = chains x steps / run time; the summary gives
the slope of log(run time) vs log(chains) from 10^4 up (target 1.0 +- 0.1: the cost per chain does
not grow with the number of chains), the slope of log(peak - base) vs log(chains) from 10^5 up
(target ~1: memory linear in chains) and the ratio of peak memory at the two step counts (target
~1: flat in num_steps).

Usage::

    python benchmarks/scale.py --out benchmarks/results/scale.md          # 10^3 .. 10^6
    python benchmarks/scale.py --max-chains 10000000 --num-steps 100 200   # on a big machine / GPU
    python benchmarks/scale.py --max-chains 10000 --num-steps 10 --out /tmp/scale.md   # smoke

It writes the markdown table to ``--out`` and a log-log plot (time and memory vs chains) next to
it (``--plot``, default ``<out>.png``). Do not run timings on a loaded machine: the 1-minute load
at the start is recorded.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _machine import machine_info  # noqa: E402

#: rough bytes per chain of one batch of a run (states, gradients, activations), for --max-memory-gb
BYTES_PER_CHAIN = {"mlp": 6_000, "ising": 20_000}


# ---------------------------------------------------------------- one configuration (child)
def child(model: str, num_chains: int, num_steps: int, chain_batch_size: int | None,
          cache_dir: str | None) -> dict:
    """Run one configuration in this (fresh) process and return its measurements."""
    import jax

    if cache_dir:
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    import functools

    import numpyro_ebm

    num_samples = num_steps // 2
    key = jax.random.key(0)
    if model == "mlp":
        from sampling import jax_energy, make_weights

        energy = jax_energy(make_weights())
        target = lambda x: -energy(x)  # noqa: E731
        kernel = functools.partial(numpyro_ebm.ula, step_size=1e-2)
        x0 = jax.random.normal(jax.random.key(1), (num_chains, 2))
        observables = lambda x: {"energy": energy(x)}  # noqa: E731
    elif model == "ising":
        from numpyro_ebm.models import Ising

        ising = Ising((32, 32))
        params = ising.init_params(beta=0.4)
        target, kernel = ising.distribution(params), None
        x0 = ising.init_spins(jax.random.key(1), num_chains)

        def observables(s):
            return {"m": ising.magnetization(s), "e": ising.energy_per_site(params, s)}
    else:
        raise ValueError(f"`model` must be 'mlp' or 'ising', got {model!r}.")

    def run(rng_key):
        result = numpyro_ebm.sample_chains(
            rng_key, target, kernel, x0, num_steps, num_samples, observables=observables,
            keep_samples=False, chain_batch_size=chain_batch_size,
        )
        return result.observables

    jax.block_until_ready(x0)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    jax.block_until_ready(run(key))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    moments = jax.block_until_ready(run(jax.random.fold_in(key, 1)))
    elapsed = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    device = jax.devices()[0]
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - CPU devices have none
        stats = None
    if stats and "peak_bytes_in_use" in stats:
        peak_kind, peak, base = "device", int(stats["peak_bytes_in_use"]), 0
    else:
        peak_kind = "host RSS"
    pooled = numpyro_ebm.pool_moments(moments)
    return {
        "model": model, "chains": num_chains, "steps": num_steps, "batch": chain_batch_size,
        "first_s": first, "run_s": elapsed, "peak_bytes": peak, "base_bytes": base,
        "peak_kind": peak_kind, "device": str(getattr(device, "device_kind", device.platform)),
        "backend": jax.default_backend(),
        "check": {k: float(v) for k, v in pooled.mean.items()},
    }


# ---------------------------------------------------------------- driver
def total_memory_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30


def slope(xs, ys):
    """Least-squares slope of log(y) vs log(x); NaN with fewer than 2 points."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len(pts) < 2:
        return float("nan")
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx else float("nan")


def run_child(args, model, chains, steps, batch):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", model, str(chains), str(steps),
           str(batch or 0)]
    if args.compilation_cache:
        cmd += ["--compilation-cache", args.compilation_cache]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"model": model, "chains": chains, "steps": steps, "error": "timeout"}
    if out.returncode:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["?"]
        return {"model": model, "chains": chains, "steps": steps, "error": tail[0][:200]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def mib(b):
    return b / 2**20


def write_plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    for model in sorted({r["model"] for r in rows}):
        for steps in sorted({r["steps"] for r in rows if r["model"] == model}):
            pts = sorted((r["chains"], r["run_s"], r["peak_bytes"] - r["base_bytes"])
                         for r in rows if r["model"] == model and r["steps"] == steps)
            c = [p[0] for p in pts]
            ax_t.loglog(c, [p[1] for p in pts], "o-", label=f"{model}, {steps} steps")
            ax_m.loglog(c, [max(mib(p[2]), 1e-1) for p in pts], "o-",
                        label=f"{model}, {steps} steps")
    if rows:
        lo, hi = min(r["chains"] for r in rows), max(r["chains"] for r in rows)
        ref = min(r["run_s"] for r in rows)
        ax_t.loglog([lo, hi], [ref, ref * hi / lo], "k:", label="slope 1")
    ax_t.set(xlabel="chains", ylabel="run time (s, compiled)", title="time vs chains")
    ax_m.set(xlabel="chains", ylabel="peak - base memory (MiB)", title="memory vs chains")
    for ax in (ax_t, ax_m):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "ising"], choices=["mlp", "ising"])
    parser.add_argument("--min-chains", type=int, default=1000)
    parser.add_argument("--max-chains", type=int, default=1_000_000,
                        help="largest chain count (powers of 10 from --min-chains); 10^7 needs "
                             "~60 GB host memory for ising, use a GPU or --batch-above")
    parser.add_argument("--num-steps", type=int, nargs=2, default=[20, 40],
                        help="two step counts (memory must be flat between them)")
    parser.add_argument("--batch-above", type=int, default=1_000_000,
                        help="chain counts above this run with chain_batch_size=this")
    parser.add_argument("--max-memory-gb", type=float, default=None,
                        help="skip configurations estimated above this (default: half the RAM)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per configuration")
    parser.add_argument("--compilation-cache", default=None,
                        help="directory of JAX's persistent compilation cache (first-call times "
                             "then exclude compilation once the cache is warm)")
    parser.add_argument("--out", default=None, help="markdown table here (e.g. "
                        "benchmarks/results/scale.md)")
    parser.add_argument("--plot", default=None, help="PNG plot (default: --out with .png)")
    parser.add_argument("--child", nargs=4, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        model, chains, steps, batch = args.child
        res = child(model, int(chains), int(steps), int(batch) or None, args.compilation_cache)
        print(json.dumps(res))
        return

    load_start = os.getloadavg()[0]
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    budget = (args.max_memory_gb * 2**30 if args.max_memory_gb
              else total_memory_bytes() / 2)
    counts = []
    c = args.min_chains
    while c <= args.max_chains:
        counts.append(c)
        c *= 10
    rows, skipped = [], []
    for model in args.models:
        for chains in counts:
            batch = args.batch_above if chains > args.batch_above else None

            def need(batch, chains=chains, model=model):
                # working memory of one batch + the states of all chains (positions, moments)
                state = 4 * 1024 * 2 if model == "ising" else 64
                return BYTES_PER_CHAIN[model] * (batch or chains) + state * chains

            while need(batch) > budget and (batch or chains) >= 10 * args.min_chains:
                batch = (batch or chains) // 10  # smaller batches before giving up
            if need(batch) > budget:
                skipped.append(f"{model} x {chains:.0e} chains (est. {need(batch) / 2**30:.1f} GiB)")
                continue
            for steps in args.num_steps:
                res = run_child(args, model, chains, steps, batch)
                if "error" in res:
                    skipped.append(f"{model} x {chains:.0e} chains x {steps} steps: {res['error']}")
                    print(f"  {model:5s} {chains:>9d} chains {steps:>5d} steps: {res['error']}",
                          flush=True)
                    continue
                rows.append(res)
                print(f"  {model:5s} {chains:>9d} chains {steps:>5d} steps: first "
                      f"{res['first_s']:.2f}s run {res['run_s']:.3f}s "
                      f"{chains * steps / res['run_s']:,.0f} chain-steps/s peak "
                      f"{mib(res['peak_bytes']):.0f} MiB (base {mib(res['base_bytes']):.0f})",
                      flush=True)

    lines = ["| model | chains | steps | chain_batch_size | first call s | run s | "
             "chain-steps/s | peak MiB | peak - base MiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['chains']:,} | {r['steps']} | {r['batch'] or '-'} | "
            f"{r['first_s']:.2f} | {r['run_s']:.3f} | {r['chains'] * r['steps'] / r['run_s']:,.0f}"
            f" | {mib(r['peak_bytes']):.0f} | {mib(r['peak_bytes'] - r['base_bytes']):.0f} |")
    summary = []
    for model in args.models:
        mine = [r for r in rows if r["model"] == model]
        if not mine:
            continue
        steps_hi = max(args.num_steps)
        big = [r for r in mine if r["steps"] == steps_hi and r["chains"] >= 10_000]
        s_time = slope([r["chains"] for r in big], [r["run_s"] for r in big])
        mem = [r for r in mine if r["steps"] == steps_hi and r["chains"] >= 100_000]
        s_mem = slope([r["chains"] for r in mem], [r["peak_bytes"] - r["base_bytes"] for r in mem])
        ratios = []
        for chains in sorted({r["chains"] for r in mine}):
            by = {r["steps"]: r["peak_bytes"] for r in mine if r["chains"] == chains}
            if len(by) == 2:
                ratios.append(by[max(by)] / by[min(by)])
        met = "met" if abs(s_time - 1.0) <= 0.1 else "NOT met"
        summary.append(
            f"- {model}: slope of log(run time) vs log(chains) from 10^4 up = {s_time:.2f} "
            f"(target 1.0 +- 0.1: {met if not math.isnan(s_time) else 'too few points'}); slope "
            f"of log(peak - base memory) from 10^5 up = {s_mem:.2f} (linear: ~1); peak memory at "
            f"{max(args.num_steps)} / {min(args.num_steps)} steps = "
            + (f"{min(ratios):.2f}-{max(ratios):.2f}" if ratios else "n/a")
            + " (flat in num_steps: ~1)")
    if skipped:
        summary.append("- skipped: " + "; ".join(skipped))
    table = "\n".join(lines)
    print()
    print(table)
    print("\n".join(summary))

    if args.out:
        import blackjax
        import jax
        import numpyro

        import numpyro_ebm

        plot = args.plot or os.path.splitext(args.out)[0] + ".png"
        if rows:
            write_plot(rows, plot)
        cpu, nproc = machine_info()
        device = rows[0]["device"] if rows else "?"
        kind = rows[0]["peak_kind"] if rows else "?"
        text = "\n".join([
            "## Scale: 10^3 to 10^7 chains, streamed observables, no samples kept",
            "",
            f"`python benchmarks/scale.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
            "",
            f"- date: {date}",
            f"- machine: {cpu}, nproc={nproc}, {platform.system()} {platform.machine()}; JAX "
            f"device: {device}; 1-minute load average at the start: {load_start:.2f}",
            f"- versions: python {platform.python_version()}, jax {jax.__version__}, numpyro "
            f"{numpyro.__version__}, blackjax {blackjax.__version__}, numpyro_ebm "
            f"{numpyro_ebm.__version__}",
            "- workloads: ULA (step 1e-2) on the MLP energy of benchmarks/sampling.py, observable "
            "= energy; Ising 32x32 at beta 0.4 (exact checkerboard Gibbs, kernel=None), "
            "observables = magnetization and energy per site; keep_samples=False, moments over "
            "the last num_steps // 2 states",
            f"- memory: {kind} peak per configuration, each in a fresh subprocess; base = resident "
            "memory after imports and setup, before the first call (includes the initial "
            "positions); first call = trace + compile + run"
            + (f"; persistent compilation cache `{args.compilation_cache}`"
               if args.compilation_cache else ""),
            "",
            table,
            "",
            *summary,
            "",
            f"![time and memory vs chains]({os.path.basename(plot)})" if rows else "",
            "",
        ])
        with open(args.out, "w") as f:
            f.write(text)
        print(f"wrote {args.out}" + (f" and {plot}" if rows else ""))


if __name__ == "__main__":
    main()
