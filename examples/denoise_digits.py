r"""Denoising scikit-learn digits with a learned EBM prior.

1. Train an energy :math:`E_\theta(x)` on 8x8 digits (pixels / 16, in [0, 1]; fixed 80/20 split,
   ``random_state=0``) by denoising score matching through NumPyro's ``SVI`` (MLP 64-256-256-1,
   swish).
2. Add Gaussian noise (:math:`s = 0.25`) to test digits and restore them by sampling the posterior

   .. math:: p(x \mid y) \propto \exp\big(-E_\theta(x) - \|y - x\|^2 / (2 s^2)\big)

   with MALA chains (:func:`numpyro_ebm.applications.denoise`, the posterior mean) and by MAP
   (:func:`~numpyro_ebm.applications.denoise_map`).
3. Baselines: the Wiener filter (Gaussian prior with the training mean and covariance, closed-form
   posterior mean) and Tweedie's one-step formula with a second EBM trained by DSM at
   :math:`\sigma = s` (the energy of the *noisy* digits).
4. The same posterior as a NumPyro model (``x ~ Unnormalized(E)``, ``y ~ Normal(x, s)``) sampled
   by ``MCMC(BlackJAXKernel(blackjax.mala, ...))`` for one digit, to show the library's point: a
   trained EBM is a prior like any other.

Prints the PSNR table and saves ``denoise_digits.png`` (clean / noisy / Wiener / EBM rows).

    python examples/denoise_digits.py            # about 1-2 minutes on a laptop CPU
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
from numpyro.contrib.module import flax_module
from numpyro.infer import MCMC, SVI

import numpyro_ebm
from numpyro_ebm.applications import (
    denoise,
    denoise_map,
    posterior_model,
    tweedie_denoise,
    wiener_denoise,
)
from numpyro_ebm.estimators import no_guide
from numpyro_ebm.estimators.score_matching import DenoisingScoreMatching
from numpyro_ebm.evaluation import psnr
from numpyro_ebm.nets import MLPEnergy

DIM = 64


def digits_model(data, batch_size=256):
    net = flax_module("energy", MLPEnergy(hidden=(256, 256)), input_shape=(1, DIM))
    with numpyro.plate("data", data.shape[0], subsample_size=batch_size):
        batch = numpyro.subsample(data, event_dim=1)
        numpyro.sample("x", numpyro_ebm.Unnormalized(net, (DIM,)), obs=batch)


def load_digits_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    return train_test_split(X, y, test_size=0.2, random_state=0)


def train_dsm(key, x_train, sigma, steps, lr=1e-3):
    """DSM through SVI; returns the energy ``x -> E(x)`` (batched) and the seconds it took."""
    optim = optax.adam(optax.cosine_decay_schedule(lr, steps, 0.05))
    svi = SVI(digits_model, no_guide, optim, loss=DenoisingScoreMatching(sigma))
    t0 = time.perf_counter()
    result = svi.run(key, steps, x_train, progress_bar=False)
    jax.block_until_ready(result.params)
    seconds = time.perf_counter() - t0
    E = numpyro_ebm.energy_fn(digits_model, "x", model_args=(x_train,))
    return partial(E, result.params), seconds


def restore(energy, energy_s, x_train, clean, noise, key, num_chains, num_steps, step_size):
    """All restorations of ``clean + noise * eps``; returns the PSNR rows and the images."""
    k_noise, k_post = jax.random.split(key)
    noisy = clean + noise * jax.random.normal(k_noise, clean.shape)
    wiener = wiener_denoise(noisy, jnp.mean(x_train, 0), jnp.cov(x_train.T), noise)
    t0 = time.perf_counter()
    post = jax.jit(
        lambda k, y: denoise(
            k, energy, y, noise, partial(blackjax.mala, step_size=step_size),
            num_steps=num_steps, num_samples=num_steps // 2, num_chains=num_chains,
        )
    )(k_post, noisy)
    jax.block_until_ready(post.mean)
    t_post = time.perf_counter() - t0
    x_map = jax.jit(lambda y: denoise_map(energy, y, noise, num_updates=300))(noisy)
    images = dict(clean=clean, noisy=noisy, wiener=wiener, ebm=post.mean, map=x_map)
    if energy_s is not None:
        images["tweedie"] = tweedie_denoise(energy_s, noisy, noise)

    def score(x):  # mean per-image PSNR of the estimate clipped to the pixel range
        return float(jnp.mean(psnr(jnp.clip(x, 0.0, 1.0), clean)))

    rows = [
        ("noisy input", score(noisy)),
        ("Wiener (Gaussian prior, closed form)", score(wiener)),
        ("EBM posterior mean (MALA)", score(post.mean)),
        ("EBM MAP (Adam)", score(x_map)),
    ]
    if energy_s is not None:
        rows.append((f"EBM Tweedie (DSM sigma={noise}, one step)", score(images["tweedie"])))
    return rows, images, t_post, float(post.acceptance_rate.mean())


def run(
    seed=0, noise=0.25, prior_sigma=0.1, steps=3000, num_test=100, num_chains=4,
    num_steps=600, step_size=3e-3, tweedie=True, verbose=True,
):
    x_train, x_test, _, _ = load_digits_split()
    x_train = jnp.asarray(x_train)
    k_prior, k_tweedie, k_restore, k_mcmc = jax.random.split(jax.random.key(seed), 4)

    energy, t_prior = train_dsm(k_prior, x_train, prior_sigma, steps)
    energy_s, t_tweedie = train_dsm(k_tweedie, x_train, noise, steps) if tweedie else (None, 0.0)
    clean = jnp.asarray(x_test[:num_test])
    rows, images, t_post, acceptance = restore(
        energy, energy_s, x_train, clean, noise, k_restore, num_chains, num_steps, step_size
    )

    # the same posterior as a NumPyro model, one digit, MCMC(BlackJAXKernel(mala))
    noisy0 = images["noisy"][0]
    model = posterior_model(energy, (DIM,), noise)
    mcmc = MCMC(
        numpyro_ebm.BlackJAXKernel(blackjax.mala, model=model, step_size=step_size),
        num_warmup=num_steps // 2, num_samples=num_steps // 2, num_chains=num_chains,
        chain_method="vectorized", progress_bar=False,
    )
    mcmc.run(k_mcmc, noisy0, init_params={"x": jnp.broadcast_to(noisy0, (num_chains, DIM))})
    x_mcmc = mcmc.get_samples()["x"].mean(0)
    agree = float(jnp.sqrt(jnp.mean((x_mcmc - images["ebm"][0]) ** 2)))
    model_psnr = float(psnr(jnp.clip(x_mcmc, 0, 1), clean[0]))

    if verbose:
        print(f"digits: {x_train.shape[0]} train, {num_test} test images; noise s = {noise}; "
              f"EBM prior: DSM sigma = {prior_sigma}, {steps} steps")
        print(f"train: DSM prior {t_prior:.1f} s, DSM for Tweedie {t_tweedie:.1f} s; posterior "
              f"sampling {t_post:.1f} s ({num_chains} chains x {num_steps} MALA steps of "
              f"{step_size} per image, acceptance {acceptance:.2f})")
        print(f"{'method':<48} PSNR (dB)")
        for name, value in rows:
            print(f"{name:<48} {value:6.2f}")
        print(f"NumPyro model + MCMC(BlackJAXKernel(mala)) on digit 0: PSNR {model_psnr:.2f} dB, "
              f"RMS difference to denoise() posterior mean {agree:.3f} (MC error of both)")
    return dict(
        rows=rows, t_prior=t_prior, t_tweedie=t_tweedie, t_post=t_post, acceptance=acceptance,
        model_psnr=model_psnr, agree=agree, energy=energy, x_train=x_train,
        **images,
    )


def save_grid(r, path, n=10):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [("clean", r["clean"]), ("noisy", r["noisy"]), ("Wiener", r["wiener"]),
            ("EBM posterior mean", r["ebm"]), ("EBM MAP", r["map"])]
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.9, len(rows) * 1.0))
    for i, (name, imgs) in enumerate(rows):
        for j in range(n):
            ax = axes[i, j]
            ax.imshow(np.clip(np.asarray(imgs[j]).reshape(8, 8), 0, 1), cmap="gray_r", vmin=0,
                      vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=0.25)
    parser.add_argument("--num-updates", type=int, default=3000)
    parser.add_argument("--out", default="denoise_digits.png")
    args = parser.parse_args()
    r = run(seed=args.seed, noise=args.noise, steps=args.num_updates)
    save_grid(r, args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    from numpyro_ebm import enable_compilation_cache

    enable_compilation_cache()  # reruns load compiled programs (NUMPYRO_EBM_NO_CACHE=1: off)
    main()
