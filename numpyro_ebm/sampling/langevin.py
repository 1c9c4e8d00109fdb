r"""Unadjusted Langevin algorithm (ULA), BlackJAX-shaped: ``init``, ``build_kernel``, ``ula``.

.. math::

    x_{t+1} = x_t + \eta\,\nabla_x \log p(x_t) + \sigma\,\varepsilon_t,\qquad
    \varepsilon_t \sim \mathcal N(0, I),\qquad \sigma = \sqrt{2\eta}\ \text{by default}

With the energy convention :math:`\nabla_x \log p = -\nabla_x E`. There is no accept/reject step,
so the chain is biased for finite :math:`\eta` (for a 1-D Gaussian with variance :math:`s^2` and
:math:`\sigma=\sqrt{2\eta}` the stationary variance is :math:`s^2 / (1 - \eta / (2 s^2))`).

The move is BlackJAX's Euler step of the overdamped Langevin diffusion,
``blackjax.mcmc.diffusions.overdamped_langevin``, the same step that ``blackjax.mala`` proposes:
``ula(f, step_size=h)`` is ``blackjax.mala(f, step_size=h)`` without the Metropolis-Hastings
correction, and the two step sizes are directly comparable.

Many EBM papers decouple the gradient step from the noise (e.g. :math:`\eta=10`,
:math:`\sigma=0.005` on images): pass ``noise_scale`` to set :math:`\sigma` directly. The move is
then the same Euler step with step size :math:`\sigma^2/2` on the tempered density
:math:`p^{2\eta/\sigma^2}`,

.. math::

    x + \tfrac{\sigma^2}{2}\,\tfrac{2\eta}{\sigma^2}\,\nabla_x \log p(x)
      + \sqrt{2\cdot\tfrac{\sigma^2}{2}}\,\varepsilon = x + \eta\,\nabla_x \log p(x)
      + \sigma\,\varepsilon,

so it is run by ``overdamped_langevin`` too; the chain then targets that tempered density and is a
heuristic sampler of :math:`p`, not a consistent one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from blackjax import GenerateSamplingAPI
from blackjax.base import SamplingAlgorithm
from blackjax.mcmc.diffusions import DiffusionState, overdamped_langevin

from numpyro_ebm._validation import check_finite, check_positive
from numpyro_ebm.sampling.chains import bind_algorithm

__all__ = ["ULAInfo", "ULAState", "as_top_level_api", "build_kernel", "init", "ula"]


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
    """Build the ULA kernel ``kernel(rng_key, state, logdensity_fn, step_size, noise_scale=None)``.

    One step of ``blackjax.mcmc.diffusions.overdamped_langevin``; with ``noise_scale`` the step
    size is ``noise_scale**2 / 2`` and the gradient that drives the move is scaled by
    ``2 * step_size / noise_scale**2`` (the returned state holds the unscaled log density and
    gradient).
    """

    def kernel(rng_key, state: ULAState, logdensity_fn, step_size, noise_scale=None):
        diffusion = overdamped_langevin(jax.value_and_grad(logdensity_fn))
        if noise_scale is None:
            new = diffusion(rng_key, DiffusionState(*state), step_size)
        else:
            tempering = 2.0 * step_size / noise_scale**2
            drift = jax.tree.map(lambda g: tempering * g, state.logdensity_grad)
            tempered = DiffusionState(state.position, state.logdensity, drift)
            new = diffusion(rng_key, tempered, 0.5 * noise_scale**2)
        one = jnp.ones((), dtype=jnp.result_type(float))
        return ULAState(*new), ULAInfo(one, jnp.ones((), dtype=bool))

    return kernel


def as_top_level_api(logdensity_fn: Callable, step_size, noise_scale=None) -> SamplingAlgorithm:
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
    check_finite("step_size", step_size)
    if noise_scale is not None:
        check_positive("noise_scale", noise_scale)
        check_finite("noise_scale", noise_scale)
    return bind_algorithm(
        init, build_kernel(), logdensity_fn, logdensity_output_only=True, step_size=step_size,
        noise_scale=noise_scale,
    )


ula = GenerateSamplingAPI(as_top_level_api, init, build_kernel)
