r"""Products of experts (Hinton 2002): multiply densities, add energies.

.. math::

    p(x) \propto \prod_{k=1}^K p_k(x) = \exp\Big(-\sum_{k=1}^K E_k(x)\Big),
    \qquad E(x) = \sum_k E_k(x).

An expert can be an energy function, a (normalized) NumPyro distribution (its energy is
``-log_prob``), an :class:`~numpyro_ebm.Unnormalized` distribution (e.g. a model of this package
with its parameters, ``ExponentialFamily(...).distribution(params)``), another
``ProductOfExperts``, an object with an ``energy(x)`` method, or a neural network: the callable that ``numpyro.contrib.module.flax_module``
returns inside a model (then its parameters train with the rest), a ``flax.nnx`` module, or
``functools.partial(linen_module.apply, variables)``. A product is an AND of the experts'
constraints: each can veto a region by giving it high energy, unlike a mixture (an OR).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax.numpy as jnp
import numpyro
from numpyro.distributions import Distribution, constraints

from numpyro_ebm.distribution import Unnormalized
from numpyro_ebm.models.base import EnergyModel

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
    if isinstance(expert, ProductOfExperts):
        return expert.__call__
    if isinstance(expert, EnergyModel):
        raise TypeError(
            f"ProductOfExperts: the model {expert!r} takes its parameters explicitly; pass the "
            "expert `model.distribution(params)` (an Unnormalized site with those parameters)."
        )
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


class ProductOfExperts(EnergyModel):
    r"""A product of experts: :math:`E(x) = \sum_k E_k(x)` (see the module docstring).

    The product has no parameters of its own (``params`` is ``{}``): each expert closes over
    its own (a ``flax_module`` callable inside a model registers them as ``numpyro.param`` sites,
    which train with the rest of the model).

    :param experts: one or more experts (energies, distributions, Unnormalized sites, other
        products, networks).
    :param tuple event_shape: shape of one ``x`` (``()`` for a scalar, ``(2,)`` for a 2-D point).
    :param support: constraint of ``x`` for :meth:`distribution` (default real).
    :param log_Z: optional log normalizer of :meth:`distribution` (e.g. from
        :func:`gaussian_product`).
    :param str name: name of the observed site of :meth:`model`.

    ``energy(params, x)`` (or ``poe(x)``) maps ``(..., *event_shape) -> (...)`` (each expert must
    broadcast over leading axes); ``distribution(params)`` gives the product as an
    :class:`~numpyro_ebm.Unnormalized` site, to sample (``sample_chains`` with a kernel factory)
    or train (CD/PCD, score matching, NCE) like any EBM.

    **Example** (product of two Gaussians and a learned MLP correction, inside a model)

    .. code-block:: python

        def model(data):
            mlp = flax_module("mlp", MLP(), input_shape=(1, 2))
            poe = ProductOfExperts(dist.MultivariateNormal(m1, S1), dist.MultivariateNormal(m2, S2),
                                   mlp, event_shape=(2,))
            with numpyro.plate("data", data.shape[0], subsample_size=256):
                numpyro.sample("x", poe.distribution({}), obs=data)
    """

    def __init__(self, *experts, event_shape=(), support=constraints.real, log_Z=None,
                 name: str = "poe"):
        if len(experts) == 1 and isinstance(experts[0], (list, tuple)):
            experts = tuple(experts[0])
        if not experts:
            raise ValueError("ProductOfExperts: give at least one expert.")
        if isinstance(event_shape, int):
            event_shape = (event_shape,)
        self.experts = tuple(experts)
        self._energies = tuple(as_energy(e) for e in experts)
        self.event_shape = tuple(event_shape)
        self.support = support
        self.log_Z = log_Z
        self.name = name
        self.site = name

    def __repr__(self):
        return f"ProductOfExperts({', '.join(type(e).__name__ for e in self.experts)})"

    def __len__(self):
        return len(self.experts)

    @property
    def param_shapes(self) -> dict:
        return {}

    def init_params(self, rng_key=None, data=None) -> dict:
        """``{}``: the experts hold their own parameters."""
        return {}

    def expert_energies(self, x) -> tuple:
        """Each expert's energy at ``x``: a tuple of ``(...)`` arrays."""
        return tuple(E(x) for E in self._energies)

    def energy(self, params, x):
        """:math:`E(x) = \\sum_k E_k(x)`, shape ``(...)`` (``params`` is ``{}``)."""
        self.check_params({} if params is None else params)
        return sum(self.expert_energies(x))

    def __call__(self, x):
        """:math:`E(x)` (the product as an energy function, e.g. an expert of another product)."""
        return sum(self.expert_energies(x))

    def distribution(self, params=None) -> Unnormalized:
        """The product as an :class:`~numpyro_ebm.Unnormalized` distribution over ``event_shape``."""
        self.check_params({} if params is None else params)
        return Unnormalized(self.__call__, self.event_shape, self.support, self.log_Z)

    def model(self, data=None, *, subsample_size: int | None = None):
        """A NumPyro model observing the rows of ``data`` ``(N, *event_shape)`` at the site
        ``name`` (subsampled to ``subsample_size``); the experts' own ``numpyro.param`` sites, if
        any, are those of the model that built them."""
        n = 1 if data is None else jnp.shape(data)[0]
        with numpyro.plate(f"{self.name}_data", n, subsample_size=subsample_size):
            batch = None if data is None else numpyro.subsample(data, event_dim=len(self.event_shape))
            numpyro.sample(self.site, self.distribution({}), obs=batch)

    def log_partition(self, params=None):
        if self.log_Z is not None:
            return jnp.asarray(self.log_Z)
        raise NotImplementedError(
            "ProductOfExperts.log_partition: no closed form in general (for Gaussian experts see "
            "`gaussian_product`); estimate it with `poe.logz_ais(rng_key, params, base, kernel)` "
            "or `numpyro_ebm.logz_quadrature(poe, low, high)` in 1-2 dimensions."
        )

    def logz_ais(self, rng_key, params, base, kernel, **kwargs):
        """:math:`\\log Z` by AIS on the geometric path from the normalized ``base`` with the
        kernel factory ``kernel`` (:func:`numpyro_ebm.logz_ais`)."""
        from numpyro_ebm.evaluation.ais import logz_ais

        self.check_params({} if params is None else params)
        return logz_ais(rng_key, lambda x: self(x), base, kernel, **kwargs)


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
