r"""Using a trained energy: denoising with a learned prior, anomaly scores, classification.

Small pure functions; the energy is a function ``energy: (..., D) -> (...)`` (for a trained model,
``lambda x: numpyro_ebm.energy_fn(model, "x")(params, x)``).

**Denoising.** With an EBM prior :math:`p(x) \propto e^{-E(x)}` and Gaussian noise
:math:`y = x + s\,\varepsilon`, the posterior is again an EBM,

.. math::

    p(x \mid y) \propto \exp\Big(-E(x) - \frac{\|y - x\|^2}{2 s^2}\Big),

sampled by any BlackJAX kernel over many chains (:func:`denoise`: the posterior mean, the MMSE
estimate) or maximized (:func:`denoise_map`). The same posterior as a NumPyro model is
``x ~ Unnormalized(E, (D,))``, ``y ~ Normal(x, s)`` (observed), see :func:`posterior_model`. The
Gaussian-prior baseline (Wiener filter) is :func:`wiener_denoise`; :func:`tweedie_denoise` is the
one-step posterior mean of a model trained by denoising score matching at the noise level.

**Anomaly detection.** :math:`p(x_1)/p(x_2) = e^{E(x_2) - E(x_1)}` needs no :math:`Z`, so the
energy ranks points by likelihood: :func:`anomaly_scores` (higher = more anomalous) and
:func:`auroc` (rank statistic, ties counted one half).

**Classification.** With a table of class energies ``E(k, x)`` (see
:func:`numpyro_ebm.label_energies`), :func:`predict_min_energy` and :func:`class_probabilities`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
import optax

from numpyro_ebm._validation import check_int, check_positive
from numpyro_ebm.distribution import Unnormalized
from numpyro_ebm.sampling.chains import sample_chains

__all__ = [
    "DenoiseResult",
    "anomaly_scores",
    "auroc",
    "class_probabilities",
    "denoise",
    "denoise_map",
    "denoising_logdensity",
    "posterior_model",
    "predict_min_energy",
    "psnr",
    "tweedie_denoise",
    "wiener_denoise",
]


# --------------------------------------------------------------------------------------------
# metrics


def psnr(estimate, reference, data_range: float = 1.0, axis=-1):
    r"""Peak signal-to-noise ratio in dB, :math:`10\log_{10}(R^2 / \mathrm{MSE})`.

    :param estimate: ``(..., D)``.
    :param reference: the clean signal, same shape.
    :param data_range: :math:`R`, the peak value (1 for images in [0, 1]).
    :param axis: axes the MSE averages over: ``-1`` (default) gives one PSNR per image, shape
        ``(...)`` (report their mean); ``None`` pools every pixel into one MSE (scikit-image's
        ``peak_signal_noise_ratio``).
    """
    estimate, reference = jnp.asarray(estimate), jnp.asarray(reference)
    if estimate.shape != reference.shape:
        raise ValueError(
            f"psnr: `estimate` {estimate.shape} and `reference` {reference.shape} must have the "
            "same shape."
        )
    mse = jnp.mean((estimate - reference) ** 2, axis=axis)
    return 10.0 * jnp.log10(data_range**2 / mse)


def auroc(scores_normal, scores_anomalous):
    r"""Area under the ROC curve for "anomalous scores higher".

    .. math:: \mathrm{AUROC} = P(s_a > s_n) + \tfrac12 P(s_a = s_n)

    (the Mann-Whitney statistic), by sorting: ``O((n + m) log n)``.

    :param scores_normal: ``(n,)`` scores of normal points.
    :param scores_anomalous: ``(m,)`` scores of anomalies.
    :return: scalar in [0, 1]; 0.5 is chance.
    """
    normal = jnp.sort(jnp.ravel(jnp.asarray(scores_normal)))
    anomalous = jnp.ravel(jnp.asarray(scores_anomalous))
    if normal.size == 0 or anomalous.size == 0:
        raise ValueError("auroc: `scores_normal` and `scores_anomalous` must be non-empty.")
    below = jnp.searchsorted(normal, anomalous, side="left")
    below_or_equal = jnp.searchsorted(normal, anomalous, side="right")
    wins = below + 0.5 * (below_or_equal - below)
    return jnp.sum(wins) / (normal.size * anomalous.size)


# --------------------------------------------------------------------------------------------
# anomaly detection and classification


def anomaly_scores(energy: Callable, x):
    r"""Anomaly scores: the energies :math:`E(x)`, shape ``(...)`` for ``x`` ``(..., D)``.

    Higher energy = lower (unnormalized) density = more anomalous. The unknown :math:`\log Z` is
    a common shift, so it changes no ranking (and no AUROC).
    """
    return energy(jnp.asarray(x))


def predict_min_energy(energies):
    r"""Minimum-energy class :math:`\hat y = \arg\min_k E(k, x)`: ``(..., K) -> (...)``."""
    return jnp.argmin(jnp.asarray(energies), axis=-1)


def class_probabilities(energies):
    r""":math:`p(k \mid x) = \mathrm{softmax}_k(-E(k, x))`: ``(..., K) -> (..., K)``."""
    return jax.nn.softmax(-jnp.asarray(energies), axis=-1)


# --------------------------------------------------------------------------------------------
# denoising


def denoising_logdensity(energy: Callable, y, noise_scale) -> Callable:
    r"""The log posterior of one clean signal given its noisy observation ``y`` ``(D,)``:

    .. math:: \log p(x \mid y) = -E(x) - \frac{\|y - x\|^2}{2 s^2} + \text{const}.
    """

    def logdensity(x):
        return -energy(x) - 0.5 * jnp.sum((y - x) ** 2) / noise_scale**2

    return logdensity


class DenoiseResult(NamedTuple):
    """What :func:`denoise` returns.

    :ivar mean: ``(N, D)`` posterior mean (over chains and kept samples): the MMSE estimate.
    :ivar std: ``(N, D)`` posterior standard deviation (the same draws).
    :ivar samples: ``(N, num_samples, num_chains, D)`` the kept draws.
    :ivar acceptance_rate: ``(N, num_chains)``.
    """

    mean: Any
    std: Any
    samples: Any
    acceptance_rate: Any


def _check_noisy(y):
    y = jnp.asarray(y)
    if y.ndim != 2:
        raise ValueError(f"`y` must have shape (num_images, D), got {y.shape}.")
    return y


def denoise(
    rng_key,
    energy: Callable,
    y,
    noise_scale,
    kernel: Callable,
    num_steps: int = 500,
    num_samples: int = 100,
    num_chains: int = 4,
    thin: int = 1,
    init=None,
) -> DenoiseResult:
    r"""Posterior sampling under an EBM prior and a Gaussian likelihood, for many images at once.

    For each noisy image :math:`y_n`, runs ``num_chains`` chains of ``kernel`` on
    :func:`denoising_logdensity` (``vmap`` over images of :func:`numpyro_ebm.sample_chains`) and
    averages the last ``num_samples`` states: the posterior mean
    :math:`\mathbb E[x \mid y_n]`. Jittable (``rng_key``, ``y`` and ``noise_scale`` may be traced).

    :param rng_key: a JAX PRNG key.
    :param energy: the prior energy, ``(..., D) -> (...)``.
    :param y: ``(N, D)`` noisy images.
    :param noise_scale: :math:`s > 0`, the noise standard deviation.
    :param kernel: a factory ``logdensity_fn -> blackjax.SamplingAlgorithm``, e.g.
        ``functools.partial(blackjax.mala, step_size=1e-3)`` or
        ``functools.partial(numpyro_ebm.ula, step_size=1e-3)``.
    :param int num_steps: transitions per chain (burn-in = ``num_steps - num_samples * thin``).
    :param int num_samples: kept states per chain.
    :param int num_chains: chains per image.
    :param int thin: keep every ``thin``-th state.
    :param init: ``(N, D)`` starting points (default: ``y``, the noisy images themselves).
    :return: a :class:`DenoiseResult`.
    """
    y = _check_noisy(y)
    check_positive("noise_scale", noise_scale)
    num_chains = check_int("num_chains", num_chains, 1)
    init = y if init is None else jnp.asarray(init)
    if init.shape != y.shape:
        raise ValueError(f"`init` must have the shape of `y` {y.shape}, got {init.shape}.")

    def one_image(key, y_n, x0):
        start = jnp.broadcast_to(x0, (num_chains,) + x0.shape)
        result = sample_chains(
            key, denoising_logdensity(energy, y_n, noise_scale), kernel, start, num_steps,
            num_samples, thin,
        )
        draws = result.samples  # (num_samples, num_chains, D)
        flat = draws.reshape((-1,) + x0.shape)
        return flat.mean(0), flat.std(0), draws, result.acceptance_rate

    keys = jax.random.split(rng_key, y.shape[0])
    mean, std, samples, acc = jax.vmap(one_image)(keys, y, init)
    return DenoiseResult(mean, std, samples, acc)


def denoise_map(
    energy: Callable,
    y,
    noise_scale,
    num_steps: int = 500,
    optimizer: optax.GradientTransformation | None = None,
    init=None,
):
    r"""MAP restoration :math:`\arg\min_x E(x) + \|y - x\|^2 / (2 s^2)` by ``optax``.

    All images are optimized at once (the objective is a sum of independent terms, and optax's
    transformations act elementwise, so this is one optimization per image). Jittable.

    :param energy: the prior energy, ``(..., D) -> (...)``.
    :param y: ``(N, D)`` noisy images.
    :param noise_scale: :math:`s`.
    :param int num_steps: optimizer steps.
    :param optimizer: default ``optax.adam(1e-2)``.
    :param init: starting points (default ``y``).
    :return: ``(N, D)``.
    """
    y = _check_noisy(y)
    check_positive("noise_scale", noise_scale)
    num_steps = check_int("num_steps", num_steps, 1)
    optimizer = optax.adam(1e-2) if optimizer is None else optimizer
    x = y if init is None else jnp.asarray(init)

    def objective(x):
        return jnp.sum(energy(x)) + 0.5 * jnp.sum((y - x) ** 2) / noise_scale**2

    def step(carry, _):
        x, opt_state = carry
        grad = jax.grad(objective)(x)
        updates, opt_state = optimizer.update(grad, opt_state, x)
        return (optax.apply_updates(x, updates), opt_state), None

    (x, _), _ = jax.lax.scan(step, (x, optimizer.init(x)), None, length=num_steps)
    return x


def tweedie_denoise(energy: Callable, y, noise_scale):
    r"""Tweedie's formula: :math:`\mathbb E[x \mid y] = y - s^2 \nabla_y E_s(y)`.

    Exact when :math:`E_s` is the energy of the *noisy* data density (the data convolved with
    :math:`\mathcal N(0, s^2 I)`), which is what denoising score matching at
    :math:`\sigma = s` learns: a one-step posterior mean, no sampling.
    """
    y = jnp.asarray(y)
    grad = jax.grad(lambda v: jnp.sum(energy(v)))(y)
    return y - noise_scale**2 * grad


def wiener_denoise(y, mean, cov, noise_scale):
    r"""Posterior mean under a Gaussian prior :math:`\mathcal N(\mu, \Sigma)` (Wiener filter):

    .. math:: \hat x = \mu + \Sigma(\Sigma + s^2 I)^{-1}(y - \mu).

    :param y: ``(..., D)``; :param mean: ``(D,)``; :param cov: ``(D, D)``;
    :param noise_scale: :math:`s`.
    """
    y, mean, cov = jnp.asarray(y), jnp.asarray(mean), jnp.asarray(cov)
    dim = mean.shape[-1]
    if cov.shape != (dim, dim):
        raise ValueError(f"`cov` must have shape ({dim}, {dim}), got {cov.shape}.")
    gain = jnp.linalg.solve(cov + noise_scale**2 * jnp.eye(dim, dtype=cov.dtype), cov)  # sym.
    return mean + (y - mean) @ gain


def posterior_model(energy: Callable, event_shape: tuple, noise_scale, site: str = "x"):
    r"""The denoising posterior as a NumPyro model, for ``MCMC(NUTS(...))`` or
    ``MCMC(numpyro_ebm.BlackJAXKernel(...))``::

        x ~ Unnormalized(energy, event_shape)          # the learned prior
        y ~ Normal(x, noise_scale)  (observed)          # the likelihood

    :return: ``model(y)``.
    """
    event_shape = tuple(event_shape)

    def model(y):
        x = numpyro.sample(site, Unnormalized(energy, event_shape))
        numpyro.sample("y", dist.Normal(x, noise_scale).to_event(len(event_shape)), obs=y)

    return model
