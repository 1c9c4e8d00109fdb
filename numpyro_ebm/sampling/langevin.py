r"""Unadjusted Langevin algorithm (ULA), BlackJAX-shaped: ``init``, ``build_kernel``, ``ula``.

.. math::

    x_{t+1} = x_t + \eta\,\nabla_x \log p(x_t) + \sigma\,\varepsilon_t,\qquad
    \varepsilon_t \sim \mathcal N(0, I),\qquad \sigma = \sqrt{2\eta}\ \text{by default}

With the energy convention :math:`\nabla_x \log p = -\nabla_x E`. There is no accept/reject step,
so the chain is biased for finite :math:`\eta` (for a 1-D Gaussian with variance :math:`s^2` and
:math:`\sigma=\sqrt{2\eta}` the stationary variance is :math:`s^2 / (1 - \eta / (2 s^2))`).

**Relation to BlackJAX's MALA.** ``blackjax.mala(logdensity_fn, step_size)`` proposes exactly this
move with :math:`\eta` = ``step_size`` and :math:`\sigma=\sqrt{2\,\text{step\_size}}`, then applies a
Metropolis-Hastings correction; so ``ula(f, step_size=h)`` is ``blackjax.mala(f, step_size=h)``
without the correction, and the two step sizes are directly comparable.

Many EBM papers decouple the gradient step from the noise (e.g. :math:`\eta=10`,
:math:`\sigma=0.005` on images): pass ``noise_scale`` to set :math:`\sigma` directly; the chain
then targets a tempered density and is a heuristic sampler, not a consistent one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from blackjax.base import SamplingAlgorithm
from blackjax.util import generate_gaussian_noise

from numpyro_ebm._validation import check_positive

__all__ = ["ULAState", "ULAInfo", "init", "build_kernel", "ula"]


class ULAState(NamedTuple):
    """State of a ULA chain: the position, its log density and the gradient of the log density."""

    position: jax.Array
    logdensity: jax.Array
    logdensity_grad: jax.Array


class ULAInfo(NamedTuple):
    """Information on one ULA transition.

    ``acceptance_rate`` is always 1 (every proposal is taken); it is kept so that ULA reports like
    BlackJAX's Metropolis kernels. ``is_accepted`` likewise.
    """

    acceptance_rate: jax.Array
    is_accepted: jax.Array


def init(position, logdensity_fn: Callable) -> ULAState:
    """Initial state: ``logdensity_fn(position)`` and its gradient."""
    logdensity, logdensity_grad = jax.value_and_grad(logdensity_fn)(position)
    return ULAState(position, logdensity, logdensity_grad)


def build_kernel() -> Callable:
    """Build the ULA kernel ``kernel(rng_key, state, logdensity_fn, step_size, noise_scale=None)``."""

    def kernel(rng_key, state: ULAState, logdensity_fn, step_size, noise_scale=None):
        noise = generate_gaussian_noise(rng_key, state.position)
        scale = jnp.sqrt(2.0 * step_size) if noise_scale is None else noise_scale
        position = jax.tree.map(
            lambda x, g, n: x + step_size * g + scale * n,
            state.position,
            state.logdensity_grad,
            noise,
        )
        new_state = init(position, logdensity_fn)
        one = jnp.ones((), dtype=jnp.result_type(float))
        return new_state, ULAInfo(one, jnp.ones((), dtype=bool))

    return kernel


def _ula(logdensity_fn: Callable, step_size, noise_scale=None) -> SamplingAlgorithm:
    r"""Unadjusted Langevin as a ``blackjax.SamplingAlgorithm``.

    :param logdensity_fn: :math:`\log p(x)` up to a constant, i.e. :math:`-E(x)`, for one position.
    :param step_size: :math:`\eta > 0`, the step on the gradient.
    :param noise_scale: :math:`\sigma`, the noise standard deviation; ``None`` (default) gives
        the exact Langevin discretization :math:`\sigma = \sqrt{2\eta}`.
    :return: ``SamplingAlgorithm(init, step)`` with ``init(position) -> ULAState`` and
        ``step(rng_key, state) -> (ULAState, ULAInfo)``.

    **Example**

    .. code-block:: python

        algo = numpyro_ebm.ula(lambda x: -energy(x), step_size=1e-2)
        state = algo.init(jnp.zeros(2))
        state, info = jax.jit(algo.step)(jax.random.key(0), state)
    """
    check_positive("step_size", step_size)
    if noise_scale is not None:
        check_positive("noise_scale", noise_scale)
    kernel = build_kernel()

    def init_fn(position, rng_key=None):
        return init(position, logdensity_fn)

    def step_fn(rng_key, state):
        return kernel(rng_key, state, logdensity_fn, step_size, noise_scale)

    return SamplingAlgorithm(init_fn, step_fn)


class _ULAAPI:
    """``ula(logdensity_fn, step_size, noise_scale=None)``, with ``ula.init`` and
    ``ula.build_kernel`` attached, like BlackJAX's algorithms."""

    init = staticmethod(init)
    build_kernel = staticmethod(build_kernel)
    __doc__ = _ula.__doc__

    def __call__(self, logdensity_fn, step_size, noise_scale=None) -> SamplingAlgorithm:
        return _ula(logdensity_fn, step_size, noise_scale)


ula = _ULAAPI()
