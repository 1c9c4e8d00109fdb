r"""Metropolis-adjusted Langevin (MALA) with one random draw per step, BlackJAX-shaped:
``init``, ``build_kernel``, ``mala``.

The chain and its states are BlackJAX's (``blackjax.mcmc.mala.MALAState`` and ``MALAInfo``); only
the way the step draws its randomness differs. The proposal is the overdamped Langevin (Euler)
step and the correction the Metropolis-Hastings test of Roberts and Tweedie (1996):

.. math::

    y = x + h\,\nabla\log p(x) + \sqrt{2h}\,z_{1:d},\qquad
    \log\alpha = \log p(y) + \log q(x \mid y) - \log p(x) - \log q(y \mid x),

    \log q(y \mid x) = -\frac{\lVert y - x - h\,\nabla\log p(x)\rVert^2}{4h} + \text{const},

and :math:`y` is accepted iff :math:`u < \alpha`. Both come from **one** draw of :math:`d + 1`
uniforms :math:`w \sim \mathrm{U}(-1, 1)^{d+1}` from the step's key: :math:`z_{1:d} =
\sqrt 2\,\operatorname{erfinv}(w_{1:d})` (how ``jax.random.normal`` makes normals) and
:math:`u = (w_{d+1} + 1) / 2`, exactly Uniform(0, 1) and independent of :math:`z`. So this is the
same Markov chain as ``blackjax.mala(logdensity_fn, step_size)``; only the random numbers differ
for a given key. BlackJAX splits the key and makes a draw for the proposal and another for the
test. In a ``vmap`` over many chains with a key each, as :func:`numpyro_ebm.sample_chains` runs
them, that split is paid per chain and step: on 2 CPU cores ``sample_chains`` with
``blackjax.mala`` ran at 0.86-0.92x a hand-written MALA that draws one batch of noise per step,
and with this kernel at 0.95x or better (``benchmarks/results/sampling.md``).

A proposal whose log density is NaN or :math:`-\infty` is rejected (acceptance probability 0).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from blackjax import GenerateSamplingAPI
from blackjax.base import SamplingAlgorithm
from blackjax.mcmc.mala import MALAInfo, MALAState, init  # BlackJAX's state and init
from jax.flatten_util import ravel_pytree
from jax.scipy.special import erfinv

from numpyro_ebm._validation import check_finite, check_positive
from numpyro_ebm.sampling.chains import bind_algorithm

__all__ = ["MALAInfo", "MALAState", "as_top_level_api", "build_kernel", "init", "mala"]


def _squared_norm(tree) -> jax.Array:
    return sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(tree))


def build_kernel() -> Callable:
    """Build the kernel ``kernel(rng_key, state, logdensity_fn, step_size) -> (MALAState,
    MALAInfo)``: one proposal and one Metropolis-Hastings test from one draw of ``d + 1``
    uniforms on (-1, 1) (``d`` the size of the position)."""

    def kernel(rng_key, state: MALAState, logdensity_fn, step_size):
        flat, unravel = ravel_pytree(state.position)
        dtype = jnp.result_type(flat.dtype, float)
        # (-1, 1) open at -1, as jax.random.normal draws it: erfinv(-1) would be -inf
        low = jnp.nextafter(jnp.asarray(-1.0, dtype), jnp.asarray(0.0, dtype))
        w = jax.random.uniform(rng_key, (flat.size + 1,), dtype, minval=low, maxval=1.0)
        noise = unravel((jnp.sqrt(2.0) * erfinv(w[:-1])).astype(flat.dtype))
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
        accept = jnp.log(0.5 * (w[-1] + 1.0)) < log_ratio
        new_state = jax.tree.map(
            lambda new, old: jnp.where(accept, new, old),
            MALAState(proposal, logdensity, logdensity_grad), state,
        )
        p_accept = jnp.exp(jnp.minimum(log_ratio, 0.0))
        return new_state, MALAInfo(p_accept, accept)

    return kernel


def as_top_level_api(logdensity_fn: Callable, step_size) -> SamplingAlgorithm:
    r"""MALA as a ``blackjax.SamplingAlgorithm``, drawing one batch of uniforms per step.

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
