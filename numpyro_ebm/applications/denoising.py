r"""Denoising with a learned EBM prior.

The prior energy is a function ``energy_fn: (..., D) -> (...)`` (for a trained model,
``functools.partial(numpyro_ebm.energy_fn(model, "x"), params)``). With the prior
:math:`p(x) \propto e^{-E(x)}` and Gaussian noise :math:`y = x + s\,\varepsilon`, the posterior is
again an EBM,

.. math::

    p(x \mid y) \propto \exp\Big(-E(x) - \frac{\|y - x\|^2}{2 s^2}\Big),

sampled by any BlackJAX kernel factory over many chains (:func:`denoise`: the posterior mean, the
MMSE estimate) or maximized (:func:`denoise_map`). The same posterior as a NumPyro model is
``x ~ Unnormalized(E, (D,))``, ``y ~ Normal(x, s)`` (observed), see :func:`posterior_model`. The
Gaussian-prior baseline (Wiener filter) is :func:`wiener_denoise`; :func:`tweedie_denoise` is the
one-step posterior mean of a model trained by denoising score matching at the noise level. Score a
restoration with :func:`numpyro_ebm.evaluation.psnr`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
import optax

from numpyro_ebm._validation import check_finite, check_int, check_positive
from numpyro_ebm.distribution import Unnormalized
from numpyro_ebm.sampling.chains import is_algorithm, sample_chains

__all__ = [
    "DenoiseResult",
    "denoise",
    "denoise_map",
    "denoising_logdensity",
    "posterior_model",
    "tweedie_denoise",
    "wiener_denoise",
]


def denoising_logdensity(energy_fn: Callable, y, noise_scale) -> Callable:
    r"""The log posterior of one clean signal given its noisy observation ``y`` ``(D,)``:

    .. math:: \log p(x \mid y) = -E(x) - \frac{\|y - x\|^2}{2 s^2} + \text{const}.

    :param energy_fn: the prior energy, ``(D,) -> ()``.
    :param y: ``(D,)`` one noisy signal.
    :param noise_scale: :math:`s > 0`.
    :return: ``logdensity_fn: (D,) -> ()``, for any BlackJAX kernel factory.

    Example::

        logdensity_fn = denoising_logdensity(energy_fn, y[0], 0.25)
        numpyro_ebm.sample_chains(rng_key, logdensity_fn, partial(blackjax.mala, step_size=1e-3),
                                  jnp.broadcast_to(y[0], (4, D)), num_steps=500)
    """

    def logdensity_fn(x):
        return -energy_fn(x) - 0.5 * jnp.sum((y - x) ** 2) / noise_scale**2

    return logdensity_fn


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
    check_finite("y", y)
    return y


def denoise(
    rng_key,
    energy_fn: Callable,
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
    :param energy_fn: the prior energy, ``(..., D) -> (...)``.
    :param y: ``(N, D)`` noisy images.
    :param noise_scale: :math:`s > 0`, the noise standard deviation.
    :param kernel: a factory ``logdensity_fn -> blackjax.SamplingAlgorithm``, e.g.
        ``functools.partial(blackjax.mala, step_size=1e-3)`` or
        ``functools.partial(numpyro_ebm.ula, step_size=1e-3)``; it is built here for each
        image's posterior (an algorithm already bound to a density is refused).
    :param int num_steps: MCMC transitions per chain (burn-in = ``num_steps - num_samples * thin``).
    :param int num_samples: kept states per chain.
    :param int num_chains: chains per image.
    :param int thin: keep every ``thin``-th state.
    :param init: ``(N, D)`` starting points (default: ``y``, the noisy images themselves).
    :return: a :class:`DenoiseResult`.

    Example::

        kernel = functools.partial(blackjax.mala, step_size=3e-3)
        result = denoise(jax.random.key(0), energy_fn, y, 0.25, kernel, num_steps=600,
                         num_samples=300)
        result.mean        # (N, D) posterior means
    """
    y = _check_noisy(y)
    check_positive("noise_scale", noise_scale)
    num_chains = check_int("num_chains", num_chains, 1)
    if is_algorithm(kernel) or not callable(kernel):
        raise TypeError(
            "denoise: `kernel` must be a factory `logdensity_fn -> blackjax.SamplingAlgorithm` "
            "(e.g. `functools.partial(blackjax.mala, step_size=1e-3)`), which is built here for "
            f"each image's posterior; got {kernel!r}. An algorithm already bound to a density "
            "samples that density, not the posterior."
        )
    init = y if init is None else jnp.asarray(init)
    if init.shape != y.shape:
        raise ValueError(f"`init` must have the shape of `y` {y.shape}, got {init.shape}.")

    def one_image(key, y_n, x0):
        start = jnp.broadcast_to(x0, (num_chains,) + x0.shape)
        result = sample_chains(
            key, denoising_logdensity(energy_fn, y_n, noise_scale), kernel, start, num_steps,
            num_samples, thin,
        )
        draws = result.samples  # (num_samples, num_chains, D)
        flat = draws.reshape((-1,) + x0.shape)
        return flat.mean(0), flat.std(0), draws, result.acceptance_rate

    keys = jax.random.split(rng_key, y.shape[0])
    mean, std, samples, acc = jax.vmap(one_image)(keys, y, init)
    return DenoiseResult(mean, std, samples, acc)


def denoise_map(
    energy_fn: Callable,
    y,
    noise_scale,
    num_updates: int = 500,
    optimizer: optax.GradientTransformation | None = None,
    init=None,
):
    r"""MAP restoration :math:`\arg\min_x E(x) + \|y - x\|^2 / (2 s^2)` by ``optax``.

    All images are optimized at once (the objective is a sum of independent terms, and optax's
    transformations act elementwise, so this is one optimization per image). Jittable.

    :param energy_fn: the prior energy, ``(..., D) -> (...)``.
    :param y: ``(N, D)`` noisy images.
    :param noise_scale: :math:`s`.
    :param int num_updates: optimizer updates.
    :param optimizer: default ``optax.adam(1e-2)``.
    :param init: starting points (default ``y``).
    :return: ``(N, D)``.

    Example::

        x_map = denoise_map(energy_fn, y, 0.25, num_updates=300)   # (N, D)
    """
    y = _check_noisy(y)
    check_positive("noise_scale", noise_scale)
    num_updates = check_int("num_updates", num_updates, 1)
    optimizer = optax.adam(1e-2) if optimizer is None else optimizer
    x = y if init is None else jnp.asarray(init)

    def objective(x):
        return jnp.sum(energy_fn(x)) + 0.5 * jnp.sum((y - x) ** 2) / noise_scale**2

    def update(carry, _):
        x, opt_state = carry
        grad = jax.grad(objective)(x)
        updates, opt_state = optimizer.update(grad, opt_state, x)
        return (optax.apply_updates(x, updates), opt_state), None

    (x, _), _ = jax.lax.scan(update, (x, optimizer.init(x)), None, length=num_updates)
    return x


def tweedie_denoise(energy_fn: Callable, y, noise_scale):
    r"""Tweedie's formula: :math:`\mathbb E[x \mid y] = y - s^2 \nabla_y E_s(y)`.

    Exact when :math:`E_s` is the energy of the *noisy* data density (the data convolved with
    :math:`\mathcal N(0, s^2 I)`), which is what denoising score matching at
    :math:`\sigma = s` learns: a one-step posterior mean, no sampling.

    :param energy_fn: :math:`E_s`, ``(..., D) -> (...)``.
    :param y: ``(..., D)`` noisy signals. :param noise_scale: :math:`s`.
    :return: ``(..., D)``.

    Example::

        x_hat = tweedie_denoise(energy_fn_s, y, 0.25)   # energy_fn_s: DSM at sigma = 0.25
    """
    y = jnp.asarray(y)
    grad = jax.grad(lambda v: jnp.sum(energy_fn(v)))(y)
    return y - noise_scale**2 * grad


def wiener_denoise(y, mean, cov, noise_scale):
    r"""Posterior mean under a Gaussian prior :math:`\mathcal N(\mu, \Sigma)` (Wiener filter):

    .. math:: \hat x = \mu + \Sigma(\Sigma + s^2 I)^{-1}(y - \mu).

    :param y: ``(..., D)``; :param mean: ``(D,)``; :param cov: ``(D, D)``;
    :param noise_scale: :math:`s`.
    :return: ``(..., D)``.

    Example::

        x_hat = wiener_denoise(y, x_train.mean(0), jnp.cov(x_train.T), 0.25)
    """
    y, mean, cov = jnp.asarray(y), jnp.asarray(mean), jnp.asarray(cov)
    dim = mean.shape[-1]
    if cov.shape != (dim, dim):
        raise ValueError(f"`cov` must have shape ({dim}, {dim}), got {cov.shape}.")
    gain = jnp.linalg.solve(cov + noise_scale**2 * jnp.eye(dim, dtype=cov.dtype), cov)  # sym.
    return mean + (y - mean) @ gain


def posterior_model(energy_fn: Callable, event_shape: tuple, noise_scale, site: str = "x"):
    r"""The denoising posterior as a NumPyro model, for ``MCMC(NUTS(...))`` or
    ``MCMC(numpyro_ebm.BlackJAXKernel(...))``::

        x ~ Unnormalized(energy_fn, event_shape)       # the learned prior
        y ~ Normal(x, noise_scale)  (observed)          # the likelihood

    :param energy_fn: the prior energy, ``(*event_shape) -> ()``.
    :param event_shape: the shape of one clean signal.
    :param noise_scale: :math:`s`.
    :param site: the name of the latent site.
    :return: ``model(y)``.

    Example::

        mcmc = MCMC(NUTS(posterior_model(energy_fn, (D,), 0.25)), num_warmup=200, num_samples=1000)
        mcmc.run(jax.random.key(0), y[0])
    """
    event_shape = tuple(event_shape)

    def model(y):
        x = numpyro.sample(site, Unnormalized(energy_fn, event_shape))
        numpyro.sample("y", dist.Normal(x, noise_scale).to_event(len(event_shape)), obs=y)

    return model
