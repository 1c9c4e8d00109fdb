r"""Products of experts (Hinton 2002): multiply densities, add energies.

.. math::

    p(x) \propto \prod_{k=1}^K p_k(x) = \exp\Big(-\sum_{k=1}^K E_k(x)\Big),
    \qquad E(x) = \sum_k E_k(x).

An expert can be an energy function, a (normalized) NumPyro distribution (its energy is
``-log_prob``), an :class:`~numpyro_ebm.Unnormalized` distribution, a model of this package with an
``energy(x)`` method (e.g. :class:`~numpyro_ebm.models.ExponentialFamily`, another
``ProductOfExperts``), or a neural network: the callable that ``numpyro.contrib.module.flax_module``
returns inside a model (then its parameters train with the rest), a ``flax.nnx`` module, or
``functools.partial(linen_module.apply, variables)``. A product is an AND of the experts'
constraints: each can veto a region by giving it high energy, unlike a mixture (an OR).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax.numpy as jnp
from numpyro.distributions import Distribution, constraints

from numpyro_ebm.distribution import Unnormalized

__all__ = ["ProductOfExperts", "as_energy", "gaussian_product"]


def _squeeze_trailing_one(energy_fn: Callable) -> Callable:
    def energy(x):
        e = energy_fn(x)
        if jnp.ndim(e) >= 1 and jnp.shape(e)[-1] == 1:
            e = e[..., 0]  # an MLP's (..., 1) output
        return e

    return energy


def as_energy(expert) -> Callable:
    """The energy ``x -> E(x)`` of one expert (see the module docstring for what is accepted)."""
    if isinstance(expert, Unnormalized):
        return expert.energy
    if isinstance(expert, Distribution):
        return lambda x: -expert.log_prob(x)
    energy = getattr(expert, "energy", None)
    if callable(energy) and not isinstance(expert, type):
        return energy
    try:
        import flax.linen as nn

        if isinstance(expert, nn.Module) and expert.scope is None:
            raise TypeError(
                "ProductOfExperts: an unbound flax.linen module has no parameters; pass "
                "`numpyro.contrib.module.flax_module(name, module, input_shape=...)` inside a "
                "model, or `functools.partial(module.apply, variables)`."
            )
    except ImportError:  # pragma: no cover - flax is a dependency
        pass
    if callable(expert):
        return _squeeze_trailing_one(expert)
    raise TypeError(
        "ProductOfExperts: each expert must be an energy function x -> E(x), a NumPyro "
        "distribution, an object with an `energy(x)` method or a callable network; got "
        f"{expert!r}."
    )


class ProductOfExperts:
    r"""A product of experts: :math:`E(x) = \sum_k E_k(x)` (see the module docstring).

    :param experts: one or more experts (energies, distributions, models, networks).

    ``energy(x)`` / ``__call__(x)`` map ``(..., *event_shape) -> (...)`` (each expert must
    broadcast over leading axes). ``distribution(event_shape)`` gives the product as an
    :class:`~numpyro_ebm.Unnormalized` site, to sample (``sample_chains``) or train (CD/PCD,
    score matching, NCE) like any EBM.

    **Example** (product of two Gaussians and a learned MLP correction, inside a model)

    .. code-block:: python

        def model(data):
            mlp = flax_module("mlp", MLP(), input_shape=(1, 2))
            poe = ProductOfExperts(dist.MultivariateNormal(m1, S1), dist.MultivariateNormal(m2, S2),
                                   mlp)
            with numpyro.plate("data", data.shape[0], subsample_size=256):
                numpyro.sample("x", poe.distribution((2,)), obs=data)
    """

    def __init__(self, *experts):
        if len(experts) == 1 and isinstance(experts[0], (list, tuple)):
            experts = tuple(experts[0])
        if not experts:
            raise ValueError("ProductOfExperts: give at least one expert.")
        self.experts = tuple(experts)
        self._energies = tuple(as_energy(e) for e in experts)

    def __repr__(self):
        return f"ProductOfExperts({', '.join(type(e).__name__ for e in self.experts)})"

    def __len__(self):
        return len(self.experts)

    def expert_energies(self, x) -> tuple:
        """Each expert's energy at ``x``: a tuple of ``(...)`` arrays."""
        return tuple(E(x) for E in self._energies)

    def energy(self, x):
        """:math:`E(x) = \\sum_k E_k(x)`, shape ``(...)``."""
        return sum(self.expert_energies(x))

    __call__ = energy

    def log_density(self, x):
        """The unnormalized log density :math:`-E(x)` (for BlackJAX kernels)."""
        return -self.energy(x)

    def distribution(self, event_shape=(), support=constraints.real, log_Z=None) -> Unnormalized:
        """The product as an :class:`~numpyro_ebm.Unnormalized` distribution."""
        if isinstance(event_shape, int):
            event_shape = (event_shape,)
        return Unnormalized(self.energy, tuple(event_shape), support, log_Z)


def gaussian_product(means, covariances):
    r"""The closed form of a product of Gaussian experts :math:`\prod_k \mathcal N(\mu_k, \Sigma_k)`:
    precisions add, the mean is precision-weighted,

    .. math::

        \Lambda = \sum_k \Sigma_k^{-1},\qquad \mu = \Lambda^{-1} \sum_k \Sigma_k^{-1}\mu_k,

    and the normalizer of the product of the *normalized* experts is
    :math:`\log Z = \log \int \prod_k \mathcal N(x;\mu_k,\Sigma_k)\,dx`.

    :param means: ``(K, D)``.
    :param covariances: ``(K, D, D)``.
    :return: ``(mean (D,), covariance (D, D), log_Z)``.
    """
    means, covs = jnp.asarray(means), jnp.asarray(covariances)
    precisions = jnp.linalg.inv(covs)
    precision = precisions.sum(0)
    cov = jnp.linalg.inv(precision)
    mean = cov @ jnp.einsum("kij,kj->i", precisions, means)
    D = means.shape[-1]
    # log prod_k N(x; mu_k, S_k) = log N(x; mu, S) + log_Z, evaluated at x = mu
    log_norm = lambda S: -0.5 * (D * math.log(2 * math.pi) + jnp.linalg.slogdet(S)[1])
    quad = jnp.einsum("ki,kij,kj->k", mean - means, precisions, mean - means)
    log_prod_at_mean = sum(log_norm(covs[k]) for k in range(covs.shape[0])) - 0.5 * quad.sum()
    log_Z = log_prod_at_mean - log_norm(cov)
    return mean, cov, log_Z
