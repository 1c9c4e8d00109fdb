"""Ising image restoration: a binary image, corrupted by random flips, restored three ways.

Model (a NumPyro model, ``numpyro_ebm.applications.restoration_model``): hidden clean spins y with
an Ising prior ``ising.distribution(params)``, params = {"J": beta J, "h": 0}, i.e.
log p(y) = beta J sum_<ij> y_i y_j; each observed pixel x_i equals y_i with probability 1 - p. The
posterior is again an Ising model (``applications.posterior``),
E(y | x) = -eta sum_i x_i y_i - beta J sum_<ij> y_i y_j, eta = 1/2 log((1 - p) / p).

Restorations: posterior mean by checkerboard Gibbs sampling (sign of E[y | x]), iterated
conditional modes (ICM) and naive mean field. Prints the pixel error of the noisy image and of each
restoration and saves clean / noisy / restored images to a PNG.

The same restoration as an ordinary NumPyro model under ``numpyro.infer.MCMC`` (on a
``--mcmc-size`` crop, default 32x32): the latent spins ``y`` are a discrete EBM site, updated by
``numpyro_ebm.EBMGibbs`` from their exact full conditional (the Ising prior plus the likelihood of
the noisy pixels, derived by NumPyro from the model, not by hand), and

* with J fixed, the posterior mean E[y | x] is compared with the hand-derived posterior's
  (``restore_gibbs``) on the same crop: the two agree within Monte Carlo error;
* with J latent (``J ~ HalfNormal(1)``, moved by NUTS), the model needs log Z(J), tabulated by
  thermodynamic integration, d log Z / dJ = E_J[sum_<ij> y_i y_j] (``log_partition_table``);
  the posterior of J and the restoration are printed.

Usage: python examples/ising_restoration.py [--flip-prob 0.15] [--beta 1.0] [--mcmc-size 32]
       [--out ising_restoration.png]
"""

import argparse
import time

import jax
import jax.numpy as jnp
import matplotlib
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC, NUTS

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from numpyro_ebm import EBMGibbs  # noqa: E402
from numpyro_ebm.applications import (  # noqa: E402
    flip_noise,
    flip_noise_strength,
    restoration_model,
    restore_gibbs,
    restore_icm,
    restore_mean_field,
)
from numpyro_ebm.datasets import binary_test_image  # noqa: E402
from numpyro_ebm.models import Ising  # noqa: E402


def log_partition_table(rng_key, ising, grid, num_chains=8, num_burn=300, num_steps=300):
    """log Z(J) (zero field) on ``grid`` (starting at 0) by thermodynamic integration:
    log Z(0) = N log 2 and d log Z / dJ = E_J[B(y)], B the bond sum, estimated with the model's
    own Gibbs sampler at each grid point and integrated by the trapezoid rule."""

    def mean_bond_sum(J, key):
        kernel = ising.kernel({"J": J, "h": jnp.zeros(())})
        key_init, key_run = jax.random.split(key)
        state = kernel.init(ising.init_spins(key_init, num_chains, kind="up"))

        def body(state, k):
            state = kernel.step(k, state)[0]
            return state, ising.bond_sum(state.position).mean()

        _, bonds = jax.lax.scan(body, state, jax.random.split(key_run, num_burn + num_steps))
        return bonds[num_burn:].mean()

    keys = jax.random.split(rng_key, grid.shape[0])
    means = jax.lax.map(lambda a: mean_bond_sum(*a), (grid, keys))
    steps = 0.5 * (means[1:] + means[:-1]) * jnp.diff(grid)
    return ising.num_sites * jnp.log(2.0) + jnp.concatenate([jnp.zeros(1), jnp.cumsum(steps)])


def restoration_latent_coupling(noisy, ising, flip_prob, grid, log_z):
    """``restoration_model`` with the coupling latent: J ~ HalfNormal(1); the Ising prior's
    normalizer -log Z(J) (interpolated from the table) enters as a factor."""
    J = numpyro.sample("J", dist.HalfNormal(1.0))
    numpyro.factor("log_Z", -jnp.interp(J, grid, log_z))
    return restoration_model(noisy, ising, {"J": J, "h": jnp.zeros(())}, flip_prob)


def mcmc_restoration(args, clean, noisy, prior):
    """The restoration as a NumPyro model under MCMC, on the central crop; returns panels."""
    n = args.mcmc_size
    top, left = (clean.shape[0] - n) // 2, (clean.shape[1] - n) // 2
    clean, noisy = clean[top:top + n, left:left + n], noisy[top:top + n, left:left + n]
    ising = Ising(clean.shape, periodic=False)
    print(f"\n-- as a NumPyro model under MCMC (EBMGibbs), {n}x{n} central crop --")

    t0 = time.perf_counter()
    mcmc = MCMC(EBMGibbs(model=restoration_model, blocks={"y": ising}), num_warmup=100,
                num_samples=args.mcmc_samples, progress_bar=False)
    mcmc.run(jax.random.key(args.seed + 2), noisy, ising, prior, args.flip_prob,
             init_params={"y": noisy})
    mean_model = mcmc.get_samples()["y"].mean(0)
    seconds = time.perf_counter() - t0
    _, mean_hand = restore_gibbs(jax.random.key(args.seed + 3), noisy, ising, prior,
                                 args.flip_prob, num_steps=2000, num_burn=100, num_chains=8)
    gap = float(jnp.abs(mean_model - mean_hand).mean())
    print(f"J fixed ({float(prior['J']):.2f}): {args.mcmc_samples} samples in {seconds:.1f} s; "
          f"pixel error {float(jnp.mean(jnp.sign(mean_model + 1e-6) != clean)):.4f} (model) vs "
          f"{float(jnp.mean(jnp.sign(mean_hand + 1e-6) != clean)):.4f} (hand-derived "
          f"posterior); mean |E_model[y|x] - E_hand[y|x]| = {gap:.3f}")

    t0 = time.perf_counter()
    grid = jnp.linspace(0.0, 3.0, 61)
    log_z = log_partition_table(jax.random.key(args.seed + 4), ising, grid)
    mcmc = MCMC(EBMGibbs(NUTS(restoration_latent_coupling), blocks={"y": ising}),
                num_warmup=200, num_samples=args.mcmc_samples, progress_bar=False)
    mcmc.run(jax.random.key(args.seed + 5), noisy, ising, args.flip_prob, grid, log_z,
             init_params={"y": noisy})
    samples = mcmc.get_samples()
    mean_latent = samples["y"].mean(0)
    print(f"J latent: posterior J = {float(samples['J'].mean()):.3f} +- "
          f"{float(samples['J'].std()):.3f} ({time.perf_counter() - t0:.1f} s, log Z table "
          f"included); pixel error "
          f"{float(jnp.mean(jnp.sign(mean_latent + 1e-6) != clean)):.4f}")
    return [(f"MCMC model, J fixed\n{n}x{n} crop", mean_model),
            (f"MCMC model, J latent\nJ = {float(samples['J'].mean()):.2f}", mean_latent)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--flip-prob", type=float, default=0.15)
    parser.add_argument("--beta", type=float, default=1.0, help="prior coupling beta*J")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mcmc-size", type=int, default=32,
                        help="side of the central crop restored as a NumPyro model (0: skip)")
    parser.add_argument("--mcmc-samples", type=int, default=1000)
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
    if args.mcmc_size:
        panels += mcmc_restoration(args, clean, noisy, prior)
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.4))
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
