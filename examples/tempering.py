"""Parallel tempering on a separated mixture: MALA vs PT-wrapped MALA, side by side.

Target: two unit Gaussians in 2-D, 12 standard deviations apart (means (+6, 0) and (-6, 0)),
weights 0.3 / 0.7. Every chain starts in the light (+6) mode.

* MALA alone never leaves it: the estimated weight of the +6 mode stays 1.
* ``numpyro_ebm.parallel_tempering`` wraps the same MALA kernel in a ladder of 11 inverse
  temperatures from a broad Gaussian base (beta = 0, sampled exactly) to the target (beta = 1),
  with non-reversible even-odd swaps; the ladder is tuned in a few warmup rounds
  (``tune_ladder``: equal rejection rates). It recovers the weights, and reports the swap rates,
  the global communication barrier Lambda and the round-trip rate; the stepping stones of the
  same run give log Z (0 here) with its standard error.

Saves a figure with the two sample clouds and the swap-rate ladder.

Usage: python examples/tempering.py [--num-steps 3000] [--seed 0] [--out tempering.png]
"""

import argparse
import functools
import math
import time

import blackjax
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import numpyro_ebm  # noqa: E402

MU = jnp.array([6.0, 0.0])
WEIGHT = 0.3  # of the +6 mode


def log_p(x):
    a = math.log(WEIGHT) - 0.5 * jnp.sum((x - MU) ** 2)
    b = math.log(1 - WEIGHT) - 0.5 * jnp.sum((x + MU) ** 2)
    return jnp.logaddexp(a, b) - math.log(2 * math.pi)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-steps", type=int, default=3000)
    parser.add_argument("--num-chains", type=int, default=32)
    parser.add_argument("--num-temperatures", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="tempering.png")
    args = parser.parse_args()

    key = jax.random.key(args.seed)
    mala = functools.partial(blackjax.mala, step_size=0.8)
    start = jnp.tile(MU, (args.num_chains, 1))
    num_samples = args.num_steps // 2

    t0 = time.perf_counter()
    plain = numpyro_ebm.sample_chains(jax.random.fold_in(key, 0), log_p, mala, start,
                                      args.num_steps, num_samples=num_samples)
    plain.samples.block_until_ready()
    t_mala = time.perf_counter() - t0

    t0 = time.perf_counter()
    pt = numpyro_ebm.parallel_tempering(log_p, mala, num_temperatures=args.num_temperatures)
    warm = numpyro_ebm.tune_ladder(jax.random.fold_in(key, 1), pt, start, num_rounds=4,
                                   num_steps=max(args.num_steps // 10, 20))
    tempered = numpyro_ebm.sample_chains(jax.random.fold_in(key, 2), None, pt, start,
                                         args.num_steps, num_samples=num_samples, init_state=warm)
    tempered.samples.block_until_ready()
    t_pt = time.perf_counter() - t0

    summary = numpyro_ebm.tempering_summary(tempered.state)
    logz = numpyro_ebm.stepping_stone(tempered.state)
    w_mala = float(np.mean(np.asarray(plain.samples[..., 0] > 0)))
    w_pt = float(np.mean(np.asarray(tempered.samples[..., 0] > 0)))
    print(f"weight of the +6 mode (true {WEIGHT}): MALA {w_mala:.3f} ({t_mala:.1f} s), "
          f"PT {w_pt:.3f} ({t_pt:.1f} s, incl. warmup and compilation)")
    print(f"ladder: {np.round(np.asarray(summary.betas), 4).tolist()}")
    print(f"swap rates: {np.round(np.asarray(summary.swap_rates), 3).tolist()}")
    print(f"barrier Lambda = {float(summary.barrier):.2f}, round trips per step = "
          f"{float(summary.round_trip_rate):.3f} (NRPT bound 1/(2 + 2 Lambda) = "
          f"{1 / (2 + 2 * float(summary.barrier)):.3f})")
    print(f"log Z (stepping stones) = {float(logz.log_Z):.3f} +- {float(logz.stderr):.3f} "
          f"(reverse {float(logz.log_Z_reverse):.3f}; exact 0)")

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, res, title, w in ((axes[0], plain, "MALA", w_mala), (axes[1], tempered, "PT + MALA", w_pt)):
        xy = np.asarray(res.samples).reshape(-1, 2)[::7]
        ax.scatter(xy[:, 0], xy[:, 1], s=1, alpha=0.3)
        ax.set(xlim=(-10, 10), ylim=(-4, 4), title=f"{title}: weight(+6) = {w:.2f} (true {WEIGHT})")
    b = np.asarray(summary.betas)
    axes[2].semilogx(np.sqrt(b[:-1] * b[1:] + 1e-12) + 1e-4, np.asarray(summary.swap_rates), "o-")
    for beta in b[1:]:
        axes[2].axvline(beta, color="0.85", lw=0.8, zorder=0)
    axes[2].set(xlabel="beta (pairs between the grey lines)", ylabel="swap acceptance",
                ylim=(0, 1), title=f"tuned ladder, Lambda = {float(summary.barrier):.2f}")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"saved {args.out}")


if __name__ == "__main__":
    from numpyro_ebm import enable_compilation_cache

    enable_compilation_cache()  # reruns load compiled programs (NUMPYRO_EBM_NO_CACHE=1: off)
    main()
