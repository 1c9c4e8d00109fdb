r"""Exponential families as energy-based models; contrastive divergence is moment matching.

.. math::

    E_\theta(x) = -\theta^\top T(x),\qquad p_\theta(x) = \frac{e^{\theta^\top T(x)}}{Z(\theta)},
    \qquad \nabla_\theta \log Z(\theta) = \mathbb E_{p_\theta}[T(x)].

The average log-likelihood of data :math:`x_{1..N}` is concave in :math:`\theta`, with gradient

.. math::

    \nabla_\theta \frac1N\sum_n \log p_\theta(x_n)
        = \underbrace{\tfrac1N \textstyle\sum_n T(x_n)}_{\text{data moments}}
        - \underbrace{\mathbb E_{p_\theta}[T(x)]}_{\text{model moments}},

so maximum likelihood matches the sufficient statistics. Estimating the model moments with MCMC
samples :math:`x'_m` gives *exactly* the gradient of the contrastive-divergence surrogate
:math:`\operatorname{mean}_n E_\theta(x_n) - \operatorname{mean}_m E_\theta(\operatorname{sg}(x'_m))`
(with the opposite sign: that loss is minimized): CD on an exponential family *is* stochastic
moment matching (:meth:`ExponentialFamily.log_likelihood_gradient`), and
``PersistentContrastiveDivergence`` with ``optax.sgd`` through ``SVI`` on
:meth:`ExponentialFamily.model` is the classical persistent moment-matching loop.

Examples: a Gaussian, :math:`T(x) = (x, x^2)`, :math:`\theta = (\mu/\sigma^2, -1/(2\sigma^2))`;
an Ising model, :math:`T(s) = (\sum_{\langle ij\rangle} s_i s_j, \sum_i s_i)`, :math:`\theta =
(\beta J, \beta h)`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpyro
from numpyro.distributions import constraints

from numpyro_ebm.evaluation.ais import AISResult, logz_ais
from numpyro_ebm.models.base import EnergyModel

__all__ = ["ExponentialFamily", "gaussian_statistics"]


def gaussian_statistics(x):
    """:math:`T(x) = (x, x^2)` for a scalar Gaussian: ``(...) -> (..., 2)``."""
    x = jnp.asarray(x)
    return jnp.stack([x, x**2], -1)


class ExponentialFamily(EnergyModel):
    r"""An exponential-family EBM :math:`E_\theta(x) = -\theta^\top T(x)` (module docstring).

    Parameters: ``{"theta": (K,)}``.

    :param sufficient_statistics: ``T``, mapping ``(..., *event_shape) -> (..., K)``.
    :param theta: initial natural parameters ``(K,)`` (:meth:`init_params` and the initial value
        of the ``numpyro.param`` site of :meth:`model`); default zeros.
    :param tuple event_shape: shape of one ``x`` (``()`` for a scalar, ``(4, 4)`` for a lattice).
    :param support: constraint of ``x`` for the :class:`~numpyro_ebm.Unnormalized` site.
    :param str name: prefix of the ``numpyro.param`` site (``f"{name}_theta"``); the observed
        site is ``site`` (default ``name``).

    **Example** (a Gaussian fitted by CD through SVI: the moment-matching fixed point)

    .. code-block:: python

        gauss = ExponentialFamily(gaussian_statistics, theta=jnp.array([0.0, -0.5]))
        cd = ContrastiveDivergence(partial(blackjax.mala, step_size=0.1), num_steps=10)
        svi = SVI(gauss.model, no_guide, optax.adam(1e-2), loss=cd)
        params = gauss.get_params(svi.run(key, 2000, data, subsample_size=256).params)
        gauss.energy(params, data)
    """

    def __init__(self, sufficient_statistics: Callable, theta=None, *, event_shape=(),
                 support=constraints.real, name: str = "expfam", site: str | None = None):
        if not callable(sufficient_statistics):
            raise TypeError(
                "ExponentialFamily: `sufficient_statistics` must be a callable T mapping "
                f"(..., *event_shape) -> (..., K); got {sufficient_statistics!r}."
            )
        if isinstance(event_shape, int):
            event_shape = (event_shape,)
        self.sufficient_statistics = sufficient_statistics
        self.event_shape = tuple(event_shape)
        self.theta = None if theta is None else jnp.asarray(theta, jnp.float32)
        if self.theta is not None and self.theta.ndim != 1:
            raise ValueError(f"`theta` must be a 1-D array (K,), got shape {self.theta.shape}.")
        self.support = support
        self.set_names(name, site, None)

    def __repr__(self):
        return f"ExponentialFamily(event_shape={self.event_shape})"

    @property
    def num_statistics(self) -> int:
        """``K``, the length of ``T(x)``."""
        out = jax.eval_shape(self.sufficient_statistics,
                             jax.ShapeDtypeStruct(self.event_shape, jnp.float32))
        return out.shape[-1]

    @property
    def param_shapes(self) -> dict:
        return {"theta": (self.num_statistics,)}

    def init_params(self, rng_key=None, data=None) -> dict:
        """``{"theta": theta}``: the ``theta`` given at construction, else zeros (``rng_key`` and
        ``data`` are not used)."""
        theta = jnp.zeros((self.num_statistics,)) if self.theta is None else self.theta
        return {"theta": theta}

    def statistics(self, x):
        """``T(x)``, shape ``(..., K)``."""
        return self.sufficient_statistics(x)

    def energy(self, params, x):
        """:math:`E_\\theta(x) = -\\theta^\\top T(x)`, shape ``(...)``."""
        t = self.statistics(x)
        theta = params["theta"]
        if jnp.shape(theta)[-1:] != jnp.shape(t)[-1:]:
            raise ValueError(
                f"ExponentialFamily: `params['theta']` has shape {jnp.shape(theta)}, but the "
                f"sufficient statistics have {jnp.shape(t)[-1]} entries; expected theta of shape "
                f"({jnp.shape(t)[-1]},)."
            )
        return -(t @ theta)

    def model(self, data=None, *, subsample_size: int | None = None):
        """A NumPyro model: ``theta`` as the ``numpyro.param`` site ``f"{name}_theta"`` and the data
        ``(N, *event_shape)`` observed at the :class:`~numpyro_ebm.Unnormalized` site ``site``,
        subsampled to ``subsample_size`` per step. Train with CD/PCD through ``SVI``."""
        params = {"theta": numpyro.param(f"{self.name}_theta", self.init_params()["theta"])}
        n = 1 if data is None else jnp.shape(data)[0]
        with numpyro.plate(f"{self.name}_data", n, subsample_size=subsample_size):
            batch = None if data is None else numpyro.subsample(data, event_dim=len(self.event_shape))
            numpyro.sample(self.site, self.distribution(params), obs=batch)

    def moments(self, x):
        """Mean sufficient statistics over the leading axes of ``x`` ``(n, *event_shape)``: ``(K,)``."""
        T = self.statistics(x)
        return jnp.mean(jnp.reshape(T, (-1, jnp.shape(T)[-1])), 0)

    def log_likelihood_gradient(self, data, samples):
        """The moment-matching estimate of :math:`\\nabla_\\theta` of the average log-likelihood:
        data moments minus model moments (from ``samples`` of :math:`p_\\theta`), ``(K,)``. It is
        minus the gradient of the CD surrogate loss on the same data and samples."""
        return self.moments(data) - self.moments(samples)

    def log_partition(self, params):
        raise NotImplementedError(
            "ExponentialFamily.log_partition: no closed form for a general T; estimate it with "
            "`family.logz_ais(rng_key, params, base, kernel)` (a normalized base distribution and "
            "a kernel factory), or `numpyro_ebm.logz_exact` / `logz_quadrature` on "
            "`lambda x: family.energy(params, x)` for small discrete or 1-2-D x."
        )

    def logz_ais(self, rng_key, params, base, kernel, **kwargs) -> AISResult:
        """:math:`\\log Z` by AIS on the geometric path from the normalized ``base`` with the kernel
        factory ``kernel`` (:func:`numpyro_ebm.logz_ais`; keyword arguments as there)."""
        one = lambda x: self.energy(params, x)
        return logz_ais(rng_key, one, base, kernel, **kwargs)
