r"""Noise contrastive estimation (Gutmann & Hyvärinen 2010, 2012): learn an energy *and* its log
normalizer by classifying data against samples of a known noise density.

With :math:`\log p_\theta(x) = -E_\theta(x) - \log Z` (``log_Z`` a free parameter) and a noise
density :math:`p_n` that can be sampled and evaluated, ``ν`` noise samples per data point, the
classifier's logit is

.. math::

    G(x) = -E_\theta(x) - \log Z - \log p_n(x) - \log \nu

and the loss is the logistic loss of data (label 1) against noise (label 0):

.. math::

    L = -\frac1N \sum_n \log\sigma(G(x_n)) - \nu\,\frac{1}{\nu N}\sum_k \log\sigma(-G(y_k)),
    \qquad y_k \sim p_n.

At the optimum the model is self-normalized: ``log_Z`` equals :math:`\log\int e^{-E_\theta}`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax
from jax.scipy.linalg import solve_triangular
from numpyro.distributions import Distribution, MultivariateNormal

from numpyro_ebm._validation import check_int
from numpyro_ebm.estimators.base import EnergyEstimator
from numpyro_ebm.estimators.sites import EBMSite

__all__ = ["NoiseContrastiveEstimation", "nce_loss", "noise_log_prob_fn"]


def nce_loss(logit_data: jax.Array, logit_noise: jax.Array, num_noise: int):
    r"""The NCE logistic loss from the classifier's logits.

    .. math::

        L = -\operatorname{mean}_n \log\sigma(G(x_n))
            - \nu\,\operatorname{mean}_k \log\sigma(-G(y_k))

    the mean sigmoid binary cross-entropy of data (label 1) and noise (label 0), computed with
    ``optax.losses.sigmoid_binary_cross_entropy`` (through ``log_sigmoid``: stable for logits
    of any size).

    :param logit_data: :math:`G` at the data, any shape (``N`` values).
    :param logit_noise: :math:`G` at the noise samples, any shape (``ν N`` values).
    :param int num_noise: ``ν``, noise samples per data point.
    :return: scalar.
    """
    bce = optax.losses.sigmoid_binary_cross_entropy
    return jnp.mean(bce(logit_data, 1.0)) + num_noise * jnp.mean(bce(logit_noise, 0.0))


def noise_log_prob_fn(noise: Distribution):
    """``noise.log_prob``, or for a ``MultivariateNormal`` the same density whitened by a
    precomputed inverse Cholesky factor: one matmul instead of NumPyro's batched triangular
    solve. Kept hand-written because that solve is much slower on CPU (the benchmark is in
    docs/estimators.md, "NoiseContrastiveEstimation")."""
    if type(noise) is not MultivariateNormal or noise.batch_shape != ():
        return noise.log_prob
    loc, scale_tril = noise.loc, noise.scale_tril
    dim = scale_tril.shape[-1]
    whiten = solve_triangular(scale_tril, jnp.eye(dim, dtype=scale_tril.dtype), lower=True).T
    log_norm = jnp.sum(jnp.log(jnp.diagonal(scale_tril))) + 0.5 * dim * math.log(2 * math.pi)

    def log_prob(z):
        w = (z - loc) @ whiten
        return -0.5 * jnp.sum(w * w, axis=-1) - log_norm

    return log_prob


class NoiseContrastiveEstimation(EnergyEstimator):
    r"""Noise contrastive estimation as a loss for NumPyro's ``SVI``.

    Trains the energy and the learnable log normalizer of each observed ``Unnormalized`` site by
    :func:`nce_loss` with the logit
    :math:`G(x) = -E(x) - \log Z - \log p_n(x) - \log\nu`. The site must carry its ``log_Z``::

        numpyro.sample("x", Unnormalized(E, (2,), log_Z=numpyro.param("log_Z", 0.0)), obs=data)

    Each step draws ``ν`` fresh noise samples per data point of the minibatch. The closer the
    noise is to the data (same mean and spread, somewhat wider tails), the better the estimate:
    noise far from the data makes the classification too easy and the gradients vanish.

    :param noise: a NumPyro distribution over one event of the site (``event_shape`` equal to
        the site's, ``batch_shape ()``), e.g. ``dist.MultivariateNormal(m, 2 * cov)``. It is
        fixed: for a learned noise see ``FlowContrastiveEstimation``.
    :param int num_noise: ``ν`` >= 1, noise samples per data point.
    :param sites: names of the sites to train; ``None``: every continuous observed
        ``Unnormalized`` site.
    :param report_nonfinite: warn when a step's loss is not finite (default ``True``);
        ``"full"`` also checks the data's energy every step; ``False`` lets JAX's persistent
        compilation cache store the training program (see
        :class:`~numpyro_ebm.estimators.base.EnergyEstimator`).

    **Example**

    .. code-block:: python

        noise = dist.MultivariateNormal(data.mean(0), 2 * jnp.cov(data.T))
        loss = NoiseContrastiveEstimation(noise, num_noise=4)
        svi = SVI(model, numpyro_ebm.no_guide, optax.adam(1e-2), loss=loss)
    """

    def __init__(
        self, noise: Distribution, num_noise: int = 1, sites=None, *, report_nonfinite: bool | str = True
    ):
        super().__init__(sites, report_nonfinite=report_nonfinite)
        if not isinstance(noise, Distribution):
            raise TypeError(
                "`noise` must be a NumPyro distribution over one event of the site (e.g. "
                f"`dist.MultivariateNormal(loc, cov)`), got {noise!r}."
            )
        if noise.batch_shape != ():
            raise ValueError(
                f"`noise` must have batch_shape () and describe one event of the site; it has "
                f"batch_shape {noise.batch_shape} and event_shape {noise.event_shape}. Use "
                f"`.to_event({len(noise.batch_shape)})` to make its batch dimensions an event."
            )
        self.noise = noise
        self.noise_log_prob = noise_log_prob_fn(noise)
        self.num_noise = check_int("num_noise", num_noise, minimum=1)

    def _check_site(self, site: EBMSite):
        if site.dist.log_Z is None:
            raise ValueError(
                f"NoiseContrastiveEstimation learns log Z, but the Unnormalized site "
                f"'{site.name}' has no `log_Z`. Write it as `Unnormalized(energy_fn, event_shape, "
                'log_Z=numpyro.param("log_Z", 0.0))`.'
            )
        if tuple(self.noise.event_shape) != tuple(site.dist.event_shape):
            raise ValueError(
                f"`noise` has event_shape {tuple(self.noise.event_shape)} but the site "
                f"'{site.name}' has event_shape {tuple(site.dist.event_shape)}; they must match."
            )

    def site_loss(self, site, rng_key, state=None):
        self._check_site(site)
        dist, x = site.dist, site.data
        batch_shape = x.shape[: x.ndim - len(dist.event_shape)]
        log_num_noise = math.log(self.num_noise)

        def logit(z):  # (*batch, *event) -> (*batch,)
            return -dist.energy(z) - dist.log_Z - self.noise_log_prob(z) - log_num_noise

        y = self.noise.sample(rng_key, (self.num_noise,) + batch_shape)
        # One data-shaped batch of noise at a time: a conditional energy E(y | x) that closes
        # over a batch of inputs sees noise laid out like its data.
        return nce_loss(logit(x), jax.vmap(logit)(y), self.num_noise)
