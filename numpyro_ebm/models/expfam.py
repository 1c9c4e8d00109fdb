r"""Exponential families as energy-based models, fitted by moment matching.

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
moment matching (:meth:`ExponentialFamily.log_likelihood_gradient`, :meth:`ExponentialFamily.fit`).

Examples: a Gaussian, :math:`T(x) = (x, x^2)`, :math:`\theta = (\mu/\sigma^2, -1/(2\sigma^2))`;
an Ising model, :math:`T(s) = (\sum_{\langle ij\rangle} s_i s_j, \sum_i s_i)`, :math:`\theta =
(\beta J, \beta h)`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpyro
from numpyro.distributions import constraints

from numpyro_ebm._validation import check_int, check_positive
from numpyro_ebm.distribution import Unnormalized
from numpyro_ebm.sampling.chains import build_algorithm

__all__ = ["ExponentialFamily", "MomentMatchingResult", "gaussian_statistics"]


def gaussian_statistics(x):
    """:math:`T(x) = (x, x^2)` for a scalar Gaussian: ``(...) -> (..., 2)``."""
    x = jnp.asarray(x)
    return jnp.stack([x, x**2], -1)


class MomentMatchingResult(NamedTuple):
    """What :meth:`ExponentialFamily.fit` returns.

    :ivar theta: the final parameters ``(K,)``.
    :ivar trace: ``(num_steps, K)`` parameters after each update.
    :ivar positions: the persistent chains' final positions ``(num_chains, *event_shape)``.
    """

    theta: jax.Array
    trace: jax.Array
    positions: jax.Array


class ExponentialFamily:
    r"""An exponential-family EBM :math:`E_\theta(x) = -\theta^\top T(x)` (module docstring).

    :param sufficient_statistics: ``T``, mapping ``(..., *event_shape) -> (..., K)``.
    :param theta: default natural parameters ``(K,)`` (used when a method gets ``theta=None``, and
        as the initial value of the ``numpyro.param`` site in :meth:`model`).
    :param tuple event_shape: shape of one ``x`` (``()`` for a scalar, ``(4, 4)`` for a lattice).
    :param support: constraint of ``x`` for the :class:`~numpyro_ebm.Unnormalized` site.
    :param str name: name of the ``numpyro.param`` site (``f"{name}_theta"``) and of the observed
        site (``name``).

    **Example** (a Gaussian fitted by CD through SVI: the same fixed point as moment matching)

    .. code-block:: python

        gauss = ExponentialFamily(gaussian_statistics, theta=jnp.array([0.0, -0.5]))
        cd = ContrastiveDivergence(partial(blackjax.mala, step_size=0.1), num_steps=10)
        svi = SVI(gauss.model, no_guide, optax.adam(1e-2), loss=cd)
        theta = svi.run(key, 2000, data, subsample_size=256).params["expfam_theta"]
    """

    def __init__(self, sufficient_statistics: Callable, theta=None, *, event_shape=(),
                 support=constraints.real, name: str = "expfam"):
        if not callable(sufficient_statistics):
            raise TypeError(
                "ExponentialFamily: `sufficient_statistics` must be a callable T mapping "
                f"(..., *event_shape) -> (..., K); got {sufficient_statistics!r}."
            )
        if isinstance(event_shape, int):
            event_shape = (event_shape,)
        self.sufficient_statistics = sufficient_statistics
        self.theta = None if theta is None else jnp.asarray(theta, jnp.float32)
        if self.theta is not None and self.theta.ndim != 1:
            raise ValueError(f"`theta` must be a 1-D array (K,), got shape {self.theta.shape}.")
        self.event_shape = tuple(event_shape)
        self.support = support
        self.name = name

    def _theta(self, theta):
        theta = self.theta if theta is None else jnp.asarray(theta)
        if theta is None:
            raise ValueError("ExponentialFamily: pass `theta` (no default was given).")
        return theta

    def statistics(self, x):
        """``T(x)``, shape ``(..., K)``."""
        return self.sufficient_statistics(x)

    def energy(self, x, theta=None):
        """:math:`E_\\theta(x) = -\\theta^\\top T(x)`, shape ``(...)``."""
        return -(self.statistics(x) @ self._theta(theta))

    def distribution(self, theta=None) -> Unnormalized:
        """:math:`p_\\theta` as an :class:`~numpyro_ebm.Unnormalized` distribution."""
        theta = self._theta(theta)
        return Unnormalized(lambda x: self.energy(x, theta), self.event_shape, self.support)

    def model(self, data=None, subsample_size: int | None = None):
        """A NumPyro model: ``theta`` as the ``numpyro.param`` site ``f"{name}_theta"`` and the data
        ``(N, *event_shape)`` as the observed :class:`~numpyro_ebm.Unnormalized` site ``name``,
        subsampled to ``subsample_size`` per step. Train with CD/PCD through ``SVI``."""
        theta = numpyro.param(f"{self.name}_theta", self._theta(None))
        n = 1 if data is None else jnp.shape(data)[0]
        with numpyro.plate(f"{self.name}_data", n, subsample_size=subsample_size):
            batch = None if data is None else numpyro.subsample(data, event_dim=len(self.event_shape))
            numpyro.sample(self.name, self.distribution(theta), obs=batch)

    def moments(self, x):
        """Mean sufficient statistics over the leading axis of ``x`` ``(n, *event_shape)``: ``(K,)``."""
        return jnp.mean(jnp.reshape(self.statistics(x), (-1, self._num_stats(x))), 0)

    def _num_stats(self, x):
        return jnp.shape(self.statistics(x))[-1]

    def log_likelihood_gradient(self, data, samples):
        """The moment-matching estimate of :math:`\\nabla_\\theta` of the average log-likelihood:
        data moments minus model moments (from ``samples`` of :math:`p_\\theta`), ``(K,)``. It is
        minus the gradient of the CD surrogate loss on the same data and samples."""
        return self.moments(data) - self.moments(samples)

    def fit(self, rng_key, data, kernel: Callable, theta0=None, *, num_steps: int = 500,
            learning_rate=0.05, num_chains: int = 256, mcmc_steps: int = 5,
            init_positions=None, batch_size: int | None = None) -> MomentMatchingResult:
        r"""Maximum likelihood by stochastic moment matching (persistent chains).

        Each step runs ``mcmc_steps`` transitions of ``kernel`` on ``num_chains`` persistent
        chains under the current :math:`\theta`, then ascends
        :math:`\theta \leftarrow \theta + \eta_t\,(\bar T_{\rm data} - \bar T_{\rm chains})`,
        with :math:`\eta_t` = ``learning_rate`` (a float or an ``optax`` schedule ``t -> eta``).

        :param data: ``(N, *event_shape)``.
        :param kernel: a factory ``logdensity_fn -> blackjax.SamplingAlgorithm`` over one ``x``.
        :param theta0: initial :math:`\theta` (default: the ``theta`` given at construction).
        :param init_positions: ``(num_chains, *event_shape)`` chain starts (default: data rows
            drawn at random).
        :param batch_size: data rows per step for the data moments (default: all).
        :return: :class:`MomentMatchingResult` ``(theta, trace, positions)``.
        """
        data = jnp.asarray(data)
        theta0 = self._theta(theta0).astype(jnp.float32)
        num_steps = check_int("num_steps", num_steps, 1)
        num_chains = check_int("num_chains", num_chains, 1)
        mcmc_steps = check_int("mcmc_steps", mcmc_steps, 1)
        if not callable(learning_rate):
            check_positive("learning_rate", learning_rate)
        build_algorithm(kernel, lambda x: -self.energy(x, theta0))
        init_key, run_key = jax.random.split(rng_key)
        if init_positions is None:
            init_positions = data[jax.random.randint(init_key, (num_chains,), 0, data.shape[0])]
        return _moment_matching(self, kernel, run_key, data, theta0, init_positions, num_steps,
                                learning_rate, mcmc_steps, batch_size)


@partial(jax.jit, static_argnums=(0, 1, 6, 7, 8, 9))
def _moment_matching(family, kernel, rng_key, data, theta0, positions, num_steps, learning_rate,
                     mcmc_steps, batch_size):
    data_moments_all = family.moments(data)

    def step(carry, inputs):
        theta, x = carry
        t, key = inputs
        chain_key, batch_key = jax.random.split(key)
        algorithm = kernel(lambda y: -family.energy(y, theta))
        keys = jax.random.split(chain_key, x.shape[0])

        def run_chain(k, x0):
            init_key, k = jax.random.split(k)
            state = algorithm.init(x0, init_key)
            state = jax.lax.scan(lambda s, kk: (algorithm.step(kk, s)[0], None), state,
                                 jax.random.split(k, mcmc_steps))[0]
            return state.position

        x = jax.lax.stop_gradient(jax.vmap(run_chain)(keys, x))
        if batch_size is None:
            data_moments = data_moments_all
        else:
            idx = jax.random.randint(batch_key, (batch_size,), 0, data.shape[0])
            data_moments = family.moments(data[idx])
        eta = learning_rate(t) if callable(learning_rate) else learning_rate
        theta = theta + eta * (data_moments - family.moments(x))
        return (theta, x), theta

    keys = jax.random.split(rng_key, num_steps)
    (theta, x), trace = jax.lax.scan(step, (theta0, positions), (jnp.arange(num_steps), keys))
    return MomentMatchingResult(theta, trace, x)
