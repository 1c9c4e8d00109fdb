"""Sampling cost of an adversarially trained EBM: its generator vs MALA chains on the EBM.

For each toy density, trains the MLP energy of ``benchmarks/toy_density.py`` with
``AdversarialEstimation`` (``--generator flow``: the ``ADV-flow`` row's settings; ``vera``: the
``ADV-VERA`` row's), then draws ``--num-samples`` (default 10^4) independent samples two ways and
times each (compiled, after one warm-up call, ``block_until_ready``):

* **generator**: one batched call of the trained generator (``numpyro_ebm.sample_generator``);
* **MALA**: ``--num-samples`` independent chains of ``blackjax.mala`` on ``-E`` started from a
  broad Gaussian (``N(data mean, 4 * data cov)``), each kept at its last of ``--mala-steps``
  transitions (``numpyro_ebm.sample_chains``).

and reports the MMD of each sample set against fresh data draws (Gaussian kernel, bandwidth by
the median heuristic on the data, unbiased U-statistic), next to the MMD of a second fresh data
set of the same size (the noise floor). The generator samples its own ``q``, not the EBM: its MMD
includes ``q``'s mismatch; MALA samples the EBM up to its mixing.

    python benchmarks/adversarial.py --datasets eight_gaussians,two_moons
    python benchmarks/adversarial.py --smoke          # tiny sizes, a few seconds of training

Writes ``benchmarks/results/adversarial_sampling.md`` (not with ``--smoke``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toy_density  # noqa: E402

RESULTS = toy_density.RESULTS


def mmd2(x, y, bandwidth, chunk=2000):
    """Unbiased squared MMD with kernel ``exp(-|a - b|^2 / (2 h^2))``."""

    def mean_kernel(a, b, same):
        total = 0.0
        for i in range(0, a.shape[0], chunk):
            d2 = jnp.sum((a[i : i + chunk, None, :] - b[None, :, :]) ** 2, -1)
            total += float(jnp.sum(jnp.exp(-d2 / (2 * bandwidth**2))))
        n, m = a.shape[0], b.shape[0]
        if same:  # drop the diagonal (k(a, a) = 1)
            return (total - n) / (n * (n - 1))
        return total / (n * m)

    return mean_kernel(x, x, True) + mean_kernel(y, y, True) - 2 * mean_kernel(x, y, False)


def median_bandwidth(x, max_points=2000):
    x = x[:max_points]
    d2 = jnp.sum((x[:, None, :] - x[None, :, :]) ** 2, -1)
    return float(jnp.sqrt(jnp.median(d2[jnp.triu_indices(x.shape[0], 1)]) / 2))


def timed(fn, *args):
    """Seconds of one call of a compiled ``fn`` (after a warm-up call that compiles it)."""
    jax.block_until_ready(fn(*args))
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t0


def run(dataset, args):
    import blackjax
    from numpyro.infer import SVI

    from numpyro_ebm import datasets, sample_chains
    from numpyro_ebm.energy import energy_fn
    from numpyro_ebm.estimators import sample_generator

    name = "ADV-flow" if args.generator == "flow" else "ADV-VERA"
    key = jax.random.key(args.seed)
    k_train, k_test, k_init, k_guide, k_gen, k_mala, k_start = jax.random.split(key, 7)
    truth = datasets.TOY_DENSITIES[dataset]()
    data = truth.sample(k_train, (args.num_train,))
    reference = truth.sample(k_test, (2 * args.num_samples,))
    model, guide, optim, loss, num_updates, _ = toy_density.make_setup(
        name, dataset, data, args.num_updates, k_guide
    )
    svi = SVI(model, guide, optim, loss=loss)
    state, *_ = toy_density.train(svi, data, num_updates, None, k_init, chunk=args.chunk)
    params = svi.get_params(state)
    E = energy_fn(model, "x", model_args=(data,))
    n = args.num_samples

    gen_fn = jax.jit(lambda k: sample_generator(k, guide, params, n))
    gen, t_gen = timed(gen_fn, k_gen)

    cov = jnp.cov(data.T)
    start = data.mean(0) + jax.random.normal(k_start, (n, 2)) @ jnp.linalg.cholesky(4 * cov).T
    kernel = functools.partial(blackjax.mala, step_size=args.mala_step_size)
    logdensity = lambda x: -E(params, x)  # noqa: E731

    @jax.jit
    def mala_fn(k):
        return sample_chains(k, logdensity, kernel, start, args.mala_steps).positions

    mala, t_mala = timed(mala_fn, k_mala)

    data_a, data_b = reference[:n], reference[n:]
    h = median_bandwidth(data_a)
    row = {
        "dataset": dataset,
        "generator": args.generator,
        "num_samples": n,
        "num_updates": num_updates,
        "generator_seconds": t_gen,
        "mala_seconds": t_mala,
        "mala_steps": args.mala_steps,
        "mala_step_size": args.mala_step_size,
        "mmd2_generator": mmd2(gen, data_a, h),
        "mmd2_mala": mmd2(mala, data_a, h),
        "mmd2_data_floor": mmd2(data_b, data_a, h),
        "bandwidth": h,
    }
    print(json.dumps(row), flush=True)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="eight_gaussians,two_moons,rings,checkerboard")
    parser.add_argument("--generator", choices=("flow", "vera"), default="flow")
    parser.add_argument("--num-updates", type=int, default=None)
    parser.add_argument("--num-train", type=int, default=50_000)
    parser.add_argument("--num-samples", type=int, default=10_000)
    parser.add_argument("--mala-steps", type=int, default=1000)
    parser.add_argument("--mala-step-size", type=float, default=1e-2)
    parser.add_argument("--chunk", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.num_updates, args.num_train, args.num_samples = 20, 2000, 500
        args.mala_steps, args.chunk = 20, 10
    rows = [run(d, args) for d in args.datasets.split(",") if d]
    if args.smoke:
        return
    lines = [
        f"## Sampling cost: generator vs MALA ({args.generator}, {args.num_samples} samples)",
        "",
        "| dataset | generator s | MALA s (steps) | MMD² generator | MMD² MALA | MMD² data floor |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['generator_seconds']:.3f} | {r['mala_seconds']:.2f} "
            f"({r['mala_steps']}) | {r['mmd2_generator']:.2e} | {r['mmd2_mala']:.2e} | "
            f"{r['mmd2_data_floor']:.2e} |"
        )
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"adversarial_sampling_{args.generator}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
