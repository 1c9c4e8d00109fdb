"""Ising image restoration: a binary image, corrupted by random flips, restored three ways.

Model (a NumPyro model, ``numpyro_ebm.applications.restoration_model``): hidden clean spins y with
an Ising prior ``ising.distribution(params)``, params = {"J": beta J, "h": 0}, i.e.
log p(y) = beta J sum_<ij> y_i y_j; each observed pixel x_i equals y_i with probability 1 - p. The
posterior is again an Ising model (``applications.posterior``),
E(y | x) = -eta sum_i x_i y_i - beta J sum_<ij> y_i y_j, eta = 1/2 log((1 - p) / p).

Restorations: posterior mean by checkerboard Gibbs sampling (sign of E[y | x]), iterated
conditional modes (ICM) and naive mean field. Prints the pixel error of the noisy image and of each
restoration and saves clean / noisy / restored images to a PNG.

Usage: python examples/ising_restoration.py [--flip-prob 0.15] [--beta 1.0] [--out ising_restoration.png]
"""

import argparse
import time

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from numpyro_ebm.applications import (  # noqa: E402
    flip_noise,
    flip_noise_strength,
    restore_gibbs,
    restore_icm,
    restore_mean_field,
)
from numpyro_ebm.datasets import binary_test_image  # noqa: E402
from numpyro_ebm.models import Ising  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--flip-prob", type=float, default=0.15)
    parser.add_argument("--beta", type=float, default=1.0, help="prior coupling beta*J")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="ising_restoration.png")
    args = parser.parse_args()

    clean = binary_test_image(args.size)
    noisy = flip_noise(jax.random.key(args.seed), clean, args.flip_prob)
    ising = Ising(clean.shape, periodic=False)
    prior = ising.init_params(coupling=1.0, beta=args.beta)
    print(f"{args.size}x{args.size} image, flip probability {args.flip_prob}, prior beta*J = "
          f"{args.beta}, eta = {float(flip_noise_strength(args.flip_prob)):.3f}")

    def error(y):
        return float(jnp.mean(y != clean))

    results = {"noisy": (noisy, 0.0)}
    t0 = time.perf_counter()
    restored, mean = restore_gibbs(jax.random.key(args.seed + 1), noisy, ising, prior,
                                   args.flip_prob, num_steps=400, num_burn=100, num_chains=8)
    results["Gibbs posterior mean"] = (jax.block_until_ready(restored), time.perf_counter() - t0)
    t0 = time.perf_counter()
    icm, iters = restore_icm(noisy, ising, prior, args.flip_prob)
    results[f"ICM ({int(iters)} sweeps)"] = (jax.block_until_ready(icm), time.perf_counter() - t0)
    t0 = time.perf_counter()
    mf, _ = restore_mean_field(noisy, ising, prior, args.flip_prob)
    results["mean field"] = (jax.block_until_ready(mf), time.perf_counter() - t0)

    print(f"{'image':<24} {'pixel error':>12} {'time (s)':>9}")
    for name, (y, seconds) in results.items():
        print(f"{name:<24} {error(y):>12.4f} {seconds:>9.2f}")

    panels = [("clean", clean), *[(f"{n}\nerror {error(y):.3f}", y) for n, (y, _) in
                                  results.items()], ("E[y | x] (Gibbs)", mean)]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3))
    for ax, (title, img) in zip(axes, panels):
        ax.imshow(jnp.asarray(img), cmap="gray", vmin=-1, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"saved {args.out}")


if __name__ == "__main__":
    from numpyro_ebm import enable_compilation_cache

    enable_compilation_cache()  # reruns load compiled programs (NUMPYRO_EBM_NO_CACHE=1: off)
    main()
