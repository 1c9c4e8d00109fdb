r"""Score matching: train an energy from data alone, with no sampling and no normalizing constant.

All three estimators minimize (an estimate of) the Fisher divergence between the data and the
model, written with the model's score :math:`s_\theta(x) = -\nabla_x E_\theta(x)`:

* :class:`ScoreMatching` (Hyvärinen 2005), exact:
  :math:`J = \mathbb{E}_x[\tfrac12\|\nabla_x E\|^2 - \operatorname{tr}\nabla_x^2 E]`;
* :class:`SlicedScoreMatching` (Song et al. 2019): the Hessian trace by random projections
  :math:`\mathbb{E}_v[v^\top \nabla_x^2 E\, v]`, one Hessian-vector product per projection;
* :class:`DenoisingScoreMatching` (Vincent 2011): regress the score of the noised data
  :math:`\tilde x = x + \sigma\varepsilon` onto :math:`-(\tilde x - x)/\sigma^2`; with a
  noise-conditional energy :math:`E(x, \sigma)` (:class:`~numpyro_ebm.NoiseConditionalEnergy`)
  and a ladder of :math:`\sigma`, Song and Ermon's (2019) noise-conditional score network, sampled
  by :func:`~numpyro_ebm.annealed_langevin`.

Each estimator is a loss for NumPyro's ``SVI`` (``SVI(model, no_guide, optim, loss=...)``) and is
a thin wrapper around a small pure function of the energy and the data (and of the random draws,
passed in explicitly): :func:`score_matching_loss`, :func:`sliced_score_matching_loss`,
:func:`denoising_score_matching_loss`. Derivatives are with respect to ``x``, never the
parameters; the parameters enter through ``E``.

Conventions shared by the losses here and in :mod:`numpyro_ebm.estimators.nce`:

* ``energy`` maps ``(*batch, D) -> (*batch,)``, one energy per example (events are flattened to
  ``D = prod(event_shape)`` values). Examples are independent, so the gradient of the *sum* of
  the energies is the per-example gradient, and a Hessian-vector product of that sum with a batch
  of directions is the batch of per-example Hessian-vector products. Nothing is vmapped over
  examples, so a conditional energy :math:`E(y \mid x)` that closes over a batch of inputs ``x``
  works unchanged.
* Losses are means over the examples of the minibatch (not sums): the ``N / subsample_size``
  scale of a subsampled ``numpyro.plate`` is *not* applied, so the loss (and a good learning rate)
  does not depend on the data set size (see :mod:`numpyro_ebm.estimators.base`). Several trained
  sites add their losses; by default every observed ``Unnormalized`` site with a continuous
  support is trained (``sites=`` names them explicitly).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_ebm._validation import check_float, check_int
from numpyro_ebm.estimators.base import EnergyEstimator
from numpyro_ebm.estimators.sites import EBMSite
from numpyro_ebm.sampling.annealed_langevin import NoiseConditionalEnergy

__all__ = [
    "ScoreMatching",
    "SlicedScoreMatching",
    "DenoisingScoreMatching",
    "score_matching_loss",
    "sliced_score_matching_loss",
    "denoising_score_matching_loss",
    "flat_energy",
    "grad_x",
    "is_noise_conditional",
]

# --------------------------------------------------------------------------------------------
# Shared machinery: flattened events, per-example gradients.
# --------------------------------------------------------------------------------------------


def is_noise_conditional(site: EBMSite) -> bool:
    """Whether the site's energy is a :class:`~numpyro_ebm.NoiseConditionalEnergy`."""
    return isinstance(getattr(site.dist, "energy_fn", None), NoiseConditionalEnergy)


def flat_energy(site: EBMSite, sigma=None) -> tuple[Callable, jax.Array]:
    """The site's energy on flattened events, and its data flattened the same way.

    :param sigma: for a noise-conditional site, the noise level(s) the energy is evaluated at (a
        scalar or ``(*batch,)``); ``None``: the site's ordinary energy (the smallest level).
    :return: ``(energy, x)`` with ``x`` of shape ``(*batch, D)``, ``D = prod(event_shape)``, and
        ``energy`` mapping ``(*batch, D) -> (*batch,)``.
    """
    dist, x = site.dist, site.data
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(
            f"Score matching needs continuous data: the observed data of site '{site.name}' has "
            f"dtype {x.dtype}; expected a floating dtype."
        )
    event_shape = tuple(dist.event_shape)
    batch_shape = x.shape[: x.ndim - len(event_shape)]
    size = math.prod(event_shape)

    if sigma is None:

        def energy(x_flat):
            return dist.energy(jnp.reshape(x_flat, batch_shape + event_shape))

    else:
        conditional = dist.energy_fn

        def energy(x_flat):
            out = conditional(jnp.reshape(x_flat, batch_shape + event_shape), sigma)
            if jnp.shape(out) == batch_shape + (1,):
                out = jnp.reshape(out, batch_shape)
            if jnp.shape(out) != batch_shape:
                raise ValueError(
                    f"The noise-conditional energy of site '{site.name}' returned shape "
                    f"{jnp.shape(out)} for data of shape {x.shape}; expected {batch_shape}."
                )
            return out

    return energy, jnp.reshape(x, batch_shape + (size,))


def grad_x(energy: Callable) -> Callable:
    r"""``x -> \nabla_x E(x)`` per example, ``(*batch, D) -> (*batch, D)``.

    One reverse pass over the batch: the vector-Jacobian product of the energies with ones
    (examples are independent, so this is each example's own gradient).
    """

    def grad(x):
        energies, vjp = jax.vjp(energy, x)
        return vjp(jnp.ones_like(energies))[0]

    return grad


def _dot(u, v):
    return jnp.sum(u * v, axis=-1)


# --------------------------------------------------------------------------------------------
# Pure losses.
# --------------------------------------------------------------------------------------------


def score_matching_loss(energy: Callable, x: jax.Array, *, chunk_size: int | None = None):
    r"""Hyvärinen's exact score matching objective, averaged over the examples.

    .. math::

        J(\theta) = \frac1N \sum_n \Big[ \tfrac12 \|\nabla_x E_\theta(x_n)\|^2
                    - \operatorname{tr} \nabla_x^2 E_\theta(x_n) \Big]

    The trace is :math:`\sum_i e_i^\top \nabla_x^2 E\, e_i`: ``D`` Hessian-vector products by
    forward-over-reverse (``jax.linearize`` of the gradient, evaluated along each basis vector),
    each of which keeps only its diagonal entry.

    :param energy: ``(*batch, D) -> (*batch,)``.
    :param x: data, shape ``(*batch, D)``.
    :param chunk_size: how many of the ``D`` Hessian-vector products run at once. ``None``: all
        of them (fastest; holds ``N * D * D`` numbers, i.e. the Hessians). An int: ``lax.map``
        over chunks of that size (holds ``N * chunk_size * D``), for large ``D``.
    :return: scalar.
    """
    grad, hvp = jax.linearize(grad_x(energy), x)
    dim = x.shape[-1]

    def hessian_diagonal_entry(i):  # (*batch,): e_i^T H e_i for every example
        e_i = jnp.broadcast_to(jax.nn.one_hot(i, dim, dtype=x.dtype), x.shape)
        return hvp(e_i)[..., i]

    indices = jnp.arange(dim)
    if chunk_size is None or chunk_size >= dim:
        diagonal = jax.vmap(hessian_diagonal_entry)(indices)
    else:
        diagonal = jax.lax.map(hessian_diagonal_entry, indices, batch_size=chunk_size)
    return jnp.mean(0.5 * _dot(grad, grad) - jnp.sum(diagonal, axis=0))


def sliced_score_matching_loss(
    energy: Callable, x: jax.Array, v: jax.Array, *, variance_reduced: bool = True
):
    r"""Sliced score matching (Song et al. 2019) with given projections ``v``.

    .. math::

        J(\theta) = \frac1N \sum_n \Big[ \tfrac12 \|\nabla_x E(x_n)\|^2
                    - \frac1M \sum_m v_{nm}^\top \nabla_x^2 E(x_n)\, v_{nm} \Big]
        \quad\text{(variance reduced)}

    and without variance reduction the first term is :math:`\frac1M\sum_m \tfrac12
    (v_{nm}^\top \nabla_x E(x_n))^2`. Unbiased for :func:`score_matching_loss` whenever
    :math:`\mathbb{E}[v v^\top] = I` (Rademacher or standard normal projections). One
    Hessian-vector product per projection.

    :param energy: ``(*batch, D) -> (*batch,)``.
    :param x: data, shape ``(*batch, D)``.
    :param v: projections, shape ``(M, *batch, D)``.
    :return: scalar.
    """
    grad, hvp = jax.linearize(grad_x(energy), x)
    curvature = jax.vmap(lambda v_m: _dot(v_m, hvp(v_m)))(v)  # (M, *batch)
    if variance_reduced:
        first = 0.5 * _dot(grad, grad)
    else:
        first = 0.5 * jnp.mean(_dot(v, grad) ** 2, axis=0)
    return jnp.mean(first - jnp.mean(curvature, axis=0))


def denoising_score_matching_loss(energy: Callable, x: jax.Array, eps: jax.Array, sigma):
    r"""Denoising score matching (Vincent 2011) with the noise-level weighting of NCSN.

    .. math::

        J(\theta) = \frac1N \sum_n \sigma_n^2\, \tfrac12 \Big\| -\nabla_x E(\tilde x_n)
                    + \frac{\tilde x_n - x_n}{\sigma_n^2} \Big\|^2
                  = \frac1N \sum_n \tfrac12 \big\| \varepsilon_n - \sigma_n \nabla_x E(\tilde x_n)
                    \big\|^2,
        \qquad \tilde x_n = x_n + \sigma_n \varepsilon_n

    (the right-hand form is the one computed: it never divides by :math:`\sigma`). The minimizer
    is the score of the data smoothed by :math:`\mathcal N(0, \sigma^2 I)`.

    :param energy: ``(*batch, D) -> (*batch,)``.
    :param x: data, shape ``(*batch, D)``.
    :param eps: standard normal noise, shape ``(*batch, D)``.
    :param sigma: noise scale, a scalar or one per example (shape ``(*batch,)``).
    :return: scalar.
    """
    sigma = jnp.asarray(sigma, dtype=x.dtype)[..., None]
    x_noised = x + sigma * eps
    residual = eps - sigma * grad_x(energy)(x_noised)
    return jnp.mean(0.5 * _dot(residual, residual))


# --------------------------------------------------------------------------------------------
# SVI losses.
# --------------------------------------------------------------------------------------------


class ScoreMatching(EnergyEstimator):
    r"""Exact score matching (Hyvärinen 2005) as a loss for NumPyro's ``SVI``.

    Minimizes :math:`\mathbb{E}_x[\tfrac12\|\nabla_x E(x)\|^2 - \operatorname{tr}
    \nabla_x^2 E(x)]` over the minibatch of each observed ``Unnormalized`` site (see
    :func:`score_matching_loss`). Costs ``D = prod(event_shape)`` Hessian-vector products per
    example: the choice for small ``D``; use :class:`SlicedScoreMatching` beyond a few tens.
    Needs a twice-differentiable energy on an unbounded support. Deterministic given the data.

    :param chunk_size: Hessian-vector products computed at once (``None``: all ``D``; an int
        bounds the memory to ``N * chunk_size * D`` numbers).
    :param sites: names of the sites to train; ``None``: every continuous observed
        ``Unnormalized`` site.
    :param report_nonfinite: warn when a step's loss is not finite (default ``True``);
        ``"full"`` also checks the data's energy every step; ``False`` lets JAX's persistent
        compilation cache store the training program (see
        :class:`~numpyro_ebm.estimators.base.EnergyEstimator`).

    **Example**

    .. code-block:: python

        svi = SVI(model, numpyro_ebm.no_guide, optax.adam(1e-3), loss=ScoreMatching())
        result = svi.run(jax.random.key(0), 2000, data)
    """

    def __init__(
        self, chunk_size: int | None = None, sites=None, *, report_nonfinite: bool | str = True
    ):
        super().__init__(sites, report_nonfinite=report_nonfinite)
        if chunk_size is not None:
            chunk_size = check_int("chunk_size", chunk_size, minimum=1)
        self.chunk_size = chunk_size

    def site_loss(self, site, rng_key, state=None):
        energy, x = flat_energy(site)
        return score_matching_loss(energy, x, chunk_size=self.chunk_size)


_PROJECTIONS = ("rademacher", "gaussian")


class SlicedScoreMatching(EnergyEstimator):
    r"""Sliced score matching (Song et al. 2019) as a loss for NumPyro's ``SVI``.

    Replaces the Hessian trace of :class:`ScoreMatching` by
    :math:`\frac1M\sum_m v_m^\top \nabla_x^2 E\, v_m` with fresh random projections for every
    example at every step (see :func:`sliced_score_matching_loss`): ``M`` Hessian-vector products
    per example whatever ``D``. An unbiased estimate of the exact objective, so the optimum is
    the same; the price is gradient noise.

    :param int num_projections: ``M`` >= 1, projections per example.
    :param str projection: ``"rademacher"`` (entries ±1, the lower variance) or ``"gaussian"``.
    :param bool variance_reduced: use :math:`\tfrac12\|\nabla_x E\|^2` exactly (Song et al.'s
        SSM-VR) rather than its estimate :math:`\tfrac12 (v^\top \nabla_x E)^2`.
    :param sites: names of the sites to train; ``None``: every continuous observed
        ``Unnormalized`` site.
    :param report_nonfinite: warn when a step's loss is not finite (default ``True``);
        ``"full"`` also checks the data's energy every step; ``False`` lets JAX's persistent
        compilation cache store the training program (see
        :class:`~numpyro_ebm.estimators.base.EnergyEstimator`).

    **Example**

    .. code-block:: python

        loss = SlicedScoreMatching(num_projections=4)
        svi = SVI(model, numpyro_ebm.no_guide, optax.adam(1e-3), loss=loss)
    """

    def __init__(
        self,
        num_projections: int = 1,
        projection: str = "rademacher",
        variance_reduced: bool = True,
        sites=None,
        *,
        report_nonfinite: bool | str = True,
    ):
        super().__init__(sites, report_nonfinite=report_nonfinite)
        self.num_projections = check_int("num_projections", num_projections, minimum=1)
        if projection not in _PROJECTIONS:
            raise ValueError(f"`projection` must be one of {_PROJECTIONS}, got {projection!r}.")
        if not isinstance(variance_reduced, (bool, np.bool_)):
            raise TypeError(f"`variance_reduced` must be a bool, got {variance_reduced!r}.")
        self.projection = projection
        self.variance_reduced = bool(variance_reduced)

    def site_loss(self, site, rng_key, state=None):
        energy, x = flat_energy(site)
        shape = (self.num_projections,) + x.shape
        if self.projection == "rademacher":
            v = jax.random.rademacher(rng_key, shape, dtype=x.dtype)
        else:
            v = jax.random.normal(rng_key, shape, dtype=x.dtype)
        return sliced_score_matching_loss(energy, x, v, variance_reduced=self.variance_reduced)


def _check_sigmas(sigma) -> tuple[float, ...]:
    sigmas = tuple(sigma) if isinstance(sigma, (Sequence, np.ndarray)) else (sigma,)
    if not sigmas:
        raise ValueError("`sigma` must be a positive float or a non-empty tuple of them, got ().")
    return tuple(check_float("sigma", s, positive=True) for s in sigmas)


class DenoisingScoreMatching(EnergyEstimator):
    r"""Denoising score matching (Vincent 2011), and its noise-conditional form (Song and Ermon
    2019), as a loss for NumPyro's ``SVI``.

    Each example is noised, :math:`\tilde x = x + \sigma\varepsilon`, and the model's score at
    :math:`\tilde x` regresses onto :math:`-(\tilde x - x)/\sigma^2`, weighted by
    :math:`\sigma^2` (the NCSN weighting of Song & Ermon 2019, applied to a single
    :math:`\sigma` too, where it only rescales the loss), see
    :func:`denoising_score_matching_loss`. One gradient per example, no Hessian: the cheapest
    score matching, at the price of learning the data density *smoothed* by
    :math:`\mathcal N(0, \sigma^2 I)` (for Gaussian data: precision :math:`(\Sigma +
    \sigma^2 I)^{-1}`).

    **Noise-conditional** (the site's energy is a :class:`~numpyro_ebm.NoiseConditionalEnergy`
    :math:`E(x, \sigma)`): each example draws a level :math:`\sigma_n` uniformly from the ladder
    and the energy is evaluated *at that level*, :math:`E(\tilde x_n, \sigma_n)`, so

    .. math::

        J(\theta) = \frac1N\sum_n \tfrac12\big\|\varepsilon_n - \sigma_n
        \nabla_x E_\theta(x_n + \sigma_n\varepsilon_n, \sigma_n)\big\|^2

    is minimized at every level separately by the score of the data smoothed at that level
    (Gaussian data: precision :math:`(\Sigma + \sigma_n^2 I)^{-1}` at :math:`\sigma_n`).
    Sample the trained model with :func:`~numpyro_ebm.annealed_langevin`; use its smallest level
    as an ordinary site with :func:`~numpyro_ebm.at_noise_level` (or the ``Unnormalized`` itself,
    whose energy without ``sigma`` is the smallest level).

    :param sigma: the noise scale (> 0), or a tuple of scales (e.g.
        :func:`~numpyro_ebm.geometric_sigmas`): each example then draws one uniformly. For an
        energy that is not noise-conditional the optimum is then a :math:`\sigma^2`-weighted
        compromise between the smoothed densities. ``None`` (default): the ladder of the site's
        :class:`~numpyro_ebm.NoiseConditionalEnergy` (an error for other energies).
    :param sites: names of the sites to train; ``None``: every continuous observed
        ``Unnormalized`` site.
    :param report_nonfinite: warn when a step's loss is not finite (default ``True``);
        ``"full"`` also checks the data's energy every step; ``False`` lets JAX's persistent
        compilation cache store the training program (see
        :class:`~numpyro_ebm.estimators.base.EnergyEstimator`).

    **Example**

    .. code-block:: python

        loss = DenoisingScoreMatching(sigma=0.1)
        svi = SVI(model, numpyro_ebm.no_guide, optax.adam(1e-3), loss=loss)
        # noise-conditional: the site's energy is NoiseConditionalEnergy(net, sigmas)
        svi = SVI(model, numpyro_ebm.no_guide, optax.adam(1e-3), loss=DenoisingScoreMatching())
    """

    def __init__(self, sigma=None, sites=None, *, report_nonfinite: bool | str = True):
        super().__init__(sites, report_nonfinite=report_nonfinite)
        self.sigmas = None if sigma is None else _check_sigmas(sigma)

    def site_loss(self, site, rng_key, state=None):
        conditional = is_noise_conditional(site)
        sigmas = self.sigmas
        if sigmas is None:
            if not conditional:
                raise ValueError(
                    f"DenoisingScoreMatching: `sigma` is None, but the energy of site "
                    f"'{site.name}' is not a NoiseConditionalEnergy (which carries its own "
                    "ladder); pass `sigma` (a positive float or a tuple of them)."
                )
            sigmas = site.dist.energy_fn.sigmas
        _, x = flat_energy(site)
        eps_key, sigma_key = jax.random.split(rng_key)
        eps = jax.random.normal(eps_key, x.shape, dtype=x.dtype)
        values = jnp.asarray(sigmas, dtype=x.dtype)
        if len(sigmas) == 1:
            sigma = values[0]
        else:
            sigma = values[jax.random.randint(sigma_key, x.shape[:-1], 0, len(sigmas))]
        energy, _ = flat_energy(site, sigma if conditional else None)
        return denoising_score_matching_loss(energy, x, eps, sigma)
