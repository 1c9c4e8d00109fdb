r"""Quickstart: an energy-based model as a NumPyro site, sampled with BlackJAX kernels.

The model has one site, an :class:`numpyro_ebm.Unnormalized` "banana" with energy

.. math::

    E(x) = \frac{x_1^2}{2 s_1^2} + \frac{(x_2 - b\,x_1^2)^2}{2 s_2^2},
    \qquad p(x) \propto e^{-E(x)}

(its normalizing constant is never used). We sample it

1. with many independent chains through :func:`numpyro_ebm.sample_chains`: random-walk
   Metropolis-Hastings (``blackjax.normal_random_walk``), unadjusted Langevin
   (:func:`numpyro_ebm.ula`) and MALA (``blackjax.mala``);
2. as a latent site of a NumPyro model with ``numpyro.infer.MCMC(numpyro_ebm.BlackJAXKernel(...))``;

and compare the moments with the exact ones, computed by quadrature on a grid. Prints acceptance
rates and moments; saves ``quickstart.png`` (density contours and samples per sampler).

Run: ``python examples/quickstart.py`` (about 20-30 s on a laptop CPU).
"""

from __future__ import annotations

import functools
import os
import time

import blackjax
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import numpyro

import numpyro_ebm

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

S1, S2, B = 1.0, 0.5, 0.5  # banana: x1 ~ N(0, S1^2), x2 | x1 ~ N(B x1^2, S2^2)


def banana_energy(x):
    """``E(x)`` for ``x`` of shape ``(..., 2)``; returns shape ``(...)``."""
    x1, x2 = x[..., 0], x[..., 1]
    return 0.5 * (x1 / S1) ** 2 + 0.5 * ((x2 - B * x1**2) / S2) ** 2


def model():
    numpyro.sample("x", numpyro_ebm.Unnormalized(banana_energy, event_shape=(2,)))


# ------------------------------------------------------------------------ exact moments
def exact_moments(n=801):
    """Mean and covariance of p ∝ exp(-E) by quadrature on a grid (trapezoid ~ Riemann sum)."""
    g1 = np.linspace(-7 * S1, 7 * S1, n)
    g2 = np.linspace(-6 * S2, B * (7 * S1) ** 2 + 6 * S2, 2 * n)
    X1, X2 = np.meshgrid(g1, g2, indexing="ij")
    logp = -np.asarray(banana_energy(jnp.stack([X1, X2], -1)), np.float64)
    w = np.exp(logp - logp.max())
    w /= w.sum()
    pts = np.stack([X1.ravel(), X2.ravel()], -1)
    mean = w.ravel() @ pts
    d = pts - mean
    cov = (d * w.ravel()[:, None]).T @ d
    return mean, cov


def describe(name, x, exact_mean, exact_cov, acceptance=None, ess=None):
    """Print acceptance, moments and |mean error| in standard errors (SE from ``ess`` draws)."""
    x = np.asarray(x, np.float64)
    mean, cov = x.mean(0), np.cov(x.T)
    ess = np.full(2, len(x)) if ess is None else np.asarray(ess)
    z = np.abs(mean - exact_mean) / np.sqrt(np.diag(exact_cov) / ess)
    acc = "   n/a" if acceptance is None else f"{acceptance:6.3f}"
    print(
        f"{name:<32s} acc {acc}  mean ({mean[0]:+.3f}, {mean[1]:+.3f})  "
        f"var ({cov[0, 0]:.3f}, {cov[1, 1]:.3f})  cov12 {cov[0, 1]:+.3f}  "
        f"|mean err|/SE ({z[0]:.1f}, {z[1]:.1f}), ESS {int(ess.min())}"
    )


def main(num_chains=4000, num_steps=1000, out="quickstart.png"):
    t_start = time.perf_counter()
    exact_mean, exact_cov = exact_moments()
    print(
        f"{'exact (grid quadrature)':<32s} acc    n/a  mean ({exact_mean[0]:+.3f}, "
        f"{exact_mean[1]:+.3f})  var ({exact_cov[0, 0]:.3f}, {exact_cov[1, 1]:.3f})  "
        f"cov12 {exact_cov[0, 1]:+.3f}"
    )

    # The energy of the model's site, as a pure function E(params, x) (no params here).
    E = numpyro_ebm.energy_fn(model, "x")
    logdensity = lambda x: -E({}, x)  # log p(x) = -E(x), one chain's position of shape (2,)

    kernels = {
        "MH (normal_random_walk)": functools.partial(
            blackjax.normal_random_walk, sigma=jnp.array([0.8, 0.8])
        ),
        "ULA (numpyro_ebm.ula)": functools.partial(numpyro_ebm.ula, step_size=0.02),
        "MALA (blackjax.mala)": functools.partial(blackjax.mala, step_size=0.1),
    }
    rng_key = jax.random.key(0)
    init = jax.random.normal(jax.random.key(1), (num_chains, 2))  # broad start, N(0, I)
    draws = {}
    for name, kernel in kernels.items():
        result = numpyro_ebm.sample_chains(rng_key, logdensity, kernel, init, num_steps)
        draws[name] = np.asarray(result.positions)  # final states: independent draws
        describe(name, draws[name], exact_mean, exact_cov, float(result.acceptance_rate.mean()))
    print("(ULA has no accept/reject: its O(step_size) bias shows at step 0.02; MALA removes it)")

    # The same site inside numpyro.infer.MCMC, through the BlackJAX adapter.
    mcmc = numpyro.infer.MCMC(
        numpyro_ebm.BlackJAXKernel(functools.partial(blackjax.mala, step_size=0.1), model=model),
        num_warmup=500,
        num_samples=2500,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(2), extra_fields=("accept_prob",))
    x = np.asarray(mcmc.get_samples(group_by_chain=True)["x"])  # (chains, samples, 2)
    ess = numpyro.diagnostics.effective_sample_size(x)  # autocorrelated draws: SE from ESS
    accept = float(np.mean(mcmc.get_extra_fields()["accept_prob"]))
    draws["MCMC(BlackJAXKernel(mala))"] = x.reshape(-1, 2)
    describe("MCMC(BlackJAXKernel(mala))", x.reshape(-1, 2), exact_mean, exact_cov, accept, ess)

    # Figure: density contours and samples per sampler.
    g1 = np.linspace(-4, 4, 200)
    g2 = np.linspace(-2, 8, 200)
    X1, X2 = np.meshgrid(g1, g2, indexing="ij")
    dens = np.exp(-np.asarray(banana_energy(jnp.stack([X1, X2], -1))))
    fig, axes = plt.subplots(1, len(draws), figsize=(4 * len(draws), 4), sharex=True, sharey=True)
    for ax, (name, x) in zip(np.atleast_1d(axes), draws.items()):
        ax.contour(X1, X2, dens, levels=np.exp(-np.arange(5.0, 0, -1)), colors="k", linewidths=0.8)
        ax.scatter(x[:1500, 0], x[:1500, 1], s=2, alpha=0.4)
        ax.set_title(name, fontsize=9)
        ax.set_xlim(-4, 4)
        ax.set_ylim(-2, 8)
    fig.suptitle("banana EBM: exp(-E) contours and samples")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(f"saved {os.path.abspath(out)}; total {time.perf_counter() - t_start:.1f}s")

    train_two_moons()


# ------------------------------------------------------------------------ training
def ebm_model(data):
    """A NumPyro model whose observed site is the EBM: minibatches of 512 under a plate.

    The energy is the library's default network for low-dimensional data,
    :func:`numpyro_ebm.nets.default_energy`: an MLP (128, 128) on the point and 64 random
    Fourier features of it (sharp enough for the moons' 0.2-wide cross-section), plus a confining
    ``|x|^2`` term so that the energy grows where there is no data.
    """
    from numpyro.contrib.module import flax_module

    energy = flax_module("energy", numpyro_ebm.nets.default_energy(), input_shape=(1, 2))
    with numpyro.plate("data", data.shape[0], subsample_size=512):
        batch = numpyro.subsample(data, event_dim=1)
        numpyro.sample("x", numpyro_ebm.Unnormalized(energy, (2,)), obs=batch)


def train_two_moons(num_steps=2000, out="quickstart_two_moons.png"):
    """Train the default MLP EBM on two_moons with persistent CD + MALA through NumPyro's SVI."""
    import numpyro.distributions as dist
    import optax
    from numpyro.infer import SVI

    t0 = time.perf_counter()
    truth = numpyro_ebm.datasets.two_moons()
    k_train, k_test, k_svi, k_sample = jax.random.split(jax.random.key(3), 4)
    data = truth.sample(k_train, (20_000,))
    test = truth.sample(k_test, (20_000,))

    pcd = numpyro_ebm.PersistentContrastiveDivergence(
        functools.partial(blackjax.mala, step_size=0.04),  # MALA: no step-size bias (ULA has)
        num_steps=20,
        num_chains=128,
        buffer_size=8192,
        reinit_prob=0.05,
        init_dist=dist.Uniform(-4.5, 4.5).expand([2]).to_event(1),
        alpha=0.1,  # energy-magnitude penalty: keeps PCD stable (ebm-notes section 9)
    )
    optim = optax.adam(optax.cosine_decay_schedule(1e-3, num_steps, alpha=0.05))
    svi = SVI(ebm_model, pcd.guide, optim, loss=pcd)
    result = svi.run(k_svi, num_steps, data, stable_update=True)
    numpyro_ebm.check_svi_result(result)  # clear error, never silent NaN parameters
    train_seconds = time.perf_counter() - t0

    E = numpyro_ebm.energy_fn(ebm_model, "x", model_args=(data,))
    energy = jax.jit(lambda x: E(result.params, x))
    log_Z = numpyro_ebm.logz_quadrature(energy, -6.0, 6.0, num_points=600, dim=2)
    test_nll = float(jnp.mean(energy(test)) + log_Z)
    entropy, entropy_se = numpyro_ebm.datasets.entropy(truth, jax.random.key(4), 100_000)
    print(
        f"two_moons, PCD + MALA via SVI: {num_steps} steps in {train_seconds:.1f} s; test NLL "
        f"{test_nll:.3f} nats, true entropy {float(entropy):.3f} ± {float(entropy_se):.3f}: "
        f"gap {test_nll - float(entropy):+.3f} nats"
    )

    # samples of the learned EBM: 2000 MALA chains from uniform noise
    init = jax.random.uniform(k_sample, (2000, 2), minval=-4.0, maxval=4.0)
    chains = numpyro_ebm.sample_chains(
        k_sample, lambda x: -energy(x), functools.partial(blackjax.mala, step_size=0.01),
        init, num_steps=1000,
    )  # fmt: skip
    x = np.asarray(chains.positions)
    outside = float(np.mean(np.abs(x).max(-1) > 4.0))
    print(
        f"  MALA on the learned EBM: acceptance {float(chains.acceptance_rate.mean()):.2f}; "
        f"{outside:.1%} of chains left [-4, 4]^2 (no data there: the confinement keeps them in)"
    )

    g = np.linspace(-3, 3, 200)
    X, Y = np.meshgrid(g, g)
    grid = jnp.stack([X.ravel(), Y.ravel()], -1)
    learned = np.exp(-np.asarray(energy(grid)) - float(log_Z)).reshape(X.shape)
    true = np.exp(np.asarray(truth.log_prob(grid))).reshape(X.shape)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4), sharex=True, sharey=True)
    axes[0].imshow(true, extent=(-3, 3, -3, 3), origin="lower", cmap="viridis")
    axes[0].set_title("true density")
    axes[1].imshow(learned, extent=(-3, 3, -3, 3), origin="lower", cmap="viridis")
    axes[1].set_title(f"learned EBM (gap {test_nll - float(entropy):+.3f} nats)")
    axes[2].scatter(x[:, 0], x[:, 1], s=2, alpha=0.5)
    axes[2].set_title("MALA samples of the learned EBM")
    axes[2].set_xlim(-3, 3)
    axes[2].set_ylim(-3, 3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(f"saved {os.path.abspath(out)}; training section {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    from numpyro_ebm import enable_compilation_cache

    enable_compilation_cache()  # reruns load compiled programs (NUMPYRO_EBM_NO_CACHE=1: off)
    main()
