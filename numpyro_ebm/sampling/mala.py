r"""Metropolis-adjusted Langevin (MALA) with one random draw per step, BlackJAX-shaped:
``init``, ``build_kernel``, ``mala``.

The chain and its states are BlackJAX's (``blackjax.mcmc.mala.MALAState`` and ``MALAInfo``); only
the way the step draws its randomness differs. The proposal is the overdamped Langevin (Euler)
step and the correction the Metropolis-Hastings test of Roberts and Tweedie (1996):

.. math::

    y = x + h\,\nabla\log p(x) + \sqrt{2h}\,z_{1:d},\qquad
    \log\alpha = \log p(y) + \log q(x \mid y) - \log p(x) - \log q(y \mid x),

    \log q(y \mid x) = -\frac{\lVert y - x - h\,\nabla\log p(x)\rVert^2}{4h} + \text{const},

and :math:`y` is accepted iff :math:`\log u < \log\alpha` with :math:`u = \Phi(z_{d+1})`, where
:math:`z \sim \mathcal N(0, I_{d+1})` is **one** draw of :math:`d + 1` standard normals from the
step's key. :math:`\Phi(z_{d+1})` is exactly Uniform(0, 1) and independent of :math:`z_{1:d}`, so
this is the same Markov chain as ``blackjax.mala(logdensity_fn, step_size)``; only the random
numbers differ for a given key. BlackJAX splits the key and makes a draw for the proposal and
another for the test, three hashes of the key per step; here it is one. In a ``vmap`` over many
chains with a key each, as :func:`numpyro_ebm.sample_chains` runs them, the two extra hashes
per chain are measurable: on 2 CPU cores ``blackjax.mala`` ran at 0.87-0.91x a hand-written MALA
that draws one batch of noise per step (see ``benchmarks/RESULTS.md``).

A proposal whose log density is NaN or :math:`-\infty` is rejected (acceptance probability 0).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from blackjax import GenerateSamplingAPI
from blackjax.base import SamplingAlgorithm
from blackjax.mcmc.mala import MALAInfo, MALAState
from jax.flatten_util import ravel_pytree
from jax.scipy.special import log_ndtr

from numpyro_ebm._validation import check_finite, check_positive
from numpyro_ebm.sampling.chains import bind_algorithm

__all__ = ["MALAInfo", "MALAState", "as_top_level_api", "build_kernel", "init", "mala"]


def init(position, logdensity_fn: Callable) -> MALAState:
    """Initial state: ``logdensity_fn(position)`` and its gradient."""
    logdensity, logdensity_grad = jax.value_and_grad(logdensity_fn)(position)
    return MALAState(position, logdensity, logdensity_grad)


def _squared_norm(tree) -> jax.Array:
    return sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(tree))


def build_kernel() -> Callable:
    """Build the kernel ``kernel(rng_key, state, logdensity_fn, step_size) -> (MALAState,
    MALAInfo)``: one proposal and one Metropolis-Hastings test from one draw of ``d + 1``
    standard normals (``d`` the size of the position)."""

    def kernel(rng_key, state: MALAState, logdensity_fn, step_size):
        flat, unravel = ravel_pytree(state.position)
        z = jax.random.normal(rng_key, (flat.size + 1,), jnp.result_type(flat.dtype, float))
        noise = unravel(z[:-1].astype(flat.dtype))
        scale = jnp.sqrt(2.0 * step_size)
        proposal = jax.tree.map(
            lambda x, g, n: x + step_size * g + scale * n,
            state.position, state.logdensity_grad, noise,
        )
        logdensity, logdensity_grad = jax.value_and_grad(logdensity_fn)(proposal)

        def log_q(to, frm, grad_frm):  # log N(to; frm + h grad, 2h I), up to a constant
            diff = jax.tree.map(lambda t, f, g: t - f - step_size * g, to, frm, grad_frm)
            return -_squared_norm(diff) / (4.0 * step_size)

        log_ratio = (logdensity + log_q(state.position, proposal, logdensity_grad)
                     - state.logdensity - log_q(proposal, state.position, state.logdensity_grad))
        log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
        accept = log_ndtr(z[-1]) < log_ratio
        new_state = jax.tree.map(
            lambda new, old: jnp.where(accept, new, old),
            MALAState(proposal, logdensity, logdensity_grad), state,
        )
        p_accept = jnp.exp(jnp.minimum(log_ratio, 0.0))
        return new_state, MALAInfo(p_accept, accept)

    return kernel


def as_top_level_api(logdensity_fn: Callable, step_size) -> SamplingAlgorithm:
    r"""MALA as a ``blackjax.SamplingAlgorithm``, drawing one batch of normals per step.

    :param logdensity_fn: :math:`\log p(x)` up to a constant, i.e. :math:`-E(x)`, for one
        position (a pytree).
    :param step_size: :math:`h > 0`; the proposal is :math:`x + h\nabla\log p(x) +
        \sqrt{2h}\,\varepsilon`, as in ``blackjax.mala`` and :func:`numpyro_ebm.ula`.
    :return: ``SamplingAlgorithm(init, step)`` with ``init(position) -> MALAState`` and
        ``step(rng_key, state) -> (MALAState, MALAInfo)``.

    **Example**

    .. code-block:: python

        kernel = functools.partial(numpyro_ebm.mala, step_size=0.05)   # a kernel factory
        result = numpyro_ebm.sample_chains(jax.random.key(0), lambda x: -energy(x), kernel,
                                           jnp.zeros((4096, 2)), num_steps=1000)
        result.acceptance_rate.mean()
    """
    check_positive("step_size", step_size)
    check_finite("step_size", step_size)
    return bind_algorithm(init, build_kernel(), logdensity_fn, step_size=step_size)


mala = GenerateSamplingAPI(as_top_level_api, init, build_kernel)
