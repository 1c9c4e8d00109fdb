r"""Gibbs-with-gradients (Grathwohl et al. 2021) for binary variables, Metropolis-corrected.

With :math:`f = \log p` differentiable in a relaxation of :math:`x`, the change of :math:`f`
from flipping site :math:`i` (to the other value :math:`\bar x_i = a + b - x_i`) is estimated by
:math:`\tilde d_i(x) = \partial_i f(x)\,(\bar x_i - x_i)`; a site is proposed with
:math:`q(i \mid x) = \operatorname{softmax}(\tilde d(x)/2)_i` and the flip :math:`x \to x'`
accepted with probability :math:`\min\{1,\ e^{f(x') - f(x)}\, q(i \mid x') / q(i \mid x)\}`,
which leaves :math:`p` invariant exactly.

**Categorical sites** (``num_categories=K``; Grathwohl et al. 2021, sec. 4): the position is an
integer array ``x`` of shape ``S`` with entries in ``0..K-1`` and ``logdensity_fn`` takes its
one-hot embedding ``y`` (floats, ``(*S, K)``); with :math:`g = \nabla_y f(y)` the change from
setting site :math:`i` to :math:`k \ne x_i` is estimated by :math:`\tilde d_{ik} = g_{ik} -
g_{i x_i}`, and a pair :math:`(i, k)` is proposed with :math:`q = \operatorname{softmax}(\tilde
d / 2)` over all :math:`|S|(K-1)` pairs, Metropolis-corrected with the reverse pair
:math:`(i, x_i)`.

``gibbs_with_gradients`` is a ``blackjax.GenerateSamplingAPI``: calling it returns a
``blackjax.SamplingAlgorithm``; ``gibbs_with_gradients.init`` and
``gibbs_with_gradients.build_kernel`` are the low-level pieces.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from blackjax import GenerateSamplingAPI
from blackjax.base import SamplingAlgorithm

from numpyro_ebm._validation import check_int
from numpyro_ebm.sampling.chains import bind_algorithm
from numpyro_ebm.sampling.discrete import (
    bind_categorical,
    check_array_position,
    check_in_values,
    check_values,
    metropolis_hastings_accept,
    onehot_value_and_grad,
)

__all__ = [
    "GWGInfo",
    "GWGState",
    "as_top_level_api",
    "build_kernel",
    "gibbs_with_gradients",
    "init",
]


class GWGState(NamedTuple):
    """State of a Gibbs-with-gradients chain: position, log density and its gradient."""

    position: jax.Array
    logdensity: jax.Array
    logdensity_grad: jax.Array


class GWGInfo(NamedTuple):
    """Information on one Gibbs-with-gradients step.

    :ivar acceptance_rate: Metropolis-Hastings acceptance probability of the proposed flip (the
        mean over the step's proposals).
    :ivar is_accepted: whether the last proposed flip was taken.
    :ivar flip_rate: fraction of proposed flips taken in the step (``is_accepted`` as a float when
        ``num_flips=1``).
    """

    acceptance_rate: jax.Array
    is_accepted: jax.Array
    flip_rate: jax.Array


def init(position, logdensity_fn: Callable, num_categories=None) -> GWGState:
    """Initial state: ``logdensity_fn(position)`` and its gradient in ``position`` (at its
    one-hot embedding ``(*shape, K)`` for ``num_categories=K``)."""
    if num_categories is not None:
        return GWGState(position, *onehot_value_and_grad(logdensity_fn, position, num_categories))
    logdensity, grad = jax.value_and_grad(logdensity_fn)(position)
    return GWGState(position, logdensity, grad)


def build_kernel(values=None, num_flips: int = 1, num_categories=None):
    """Build ``kernel(rng_key, state, logdensity_fn) -> (GWGState, GWGInfo)``.

    ``num_flips`` Metropolis-Hastings single-site proposals are made per step, in sequence.
    """
    if num_categories is not None:
        return _build_categorical_kernel(
            int(check_values("gibbs_with_gradients", values, num_categories).size),
            check_int("num_flips", num_flips, 1),
        )
    vals = check_values("gibbs_with_gradients", values)
    if vals.size != 2:
        raise ValueError(
            f"gibbs_with_gradients: `values` must hold exactly two values, got {values!r}; "
            "for more than two categories pass `num_categories=K` (integer positions)."
        )
    num_flips = check_int("num_flips", num_flips, 1)
    low, high = float(vals[0]), float(vals[1])

    def log_proposal(x, grad):
        # first-order estimate of f(x with site i flipped) - f(x), halved: q = softmax(d / 2)
        d = grad * ((low + high) - 2.0 * x)
        return jax.nn.log_softmax(jnp.ravel(d) / 2.0)

    def move(x, i):  # flip site i; the reverse move flips it back
        x_flat = jnp.ravel(x)
        return jnp.reshape(x_flat.at[i].set((low + high) - x_flat[i]), x.shape), i

    return _scan_flips(_one_flip(log_proposal, move, init), num_flips)


def _one_flip(log_proposal, move, init_fn):
    """One Metropolis-Hastings single-site move: draw ``j ~ q = exp(log_proposal(x, grad))``,
    ``(x', j_back) = move(x, j)``, accept with ``p(x') q(j_back | x') / (p(x) q(j | x))``."""

    def one_flip(state: GWGState, key, logdensity_fn):
        key_site, key_accept = jax.random.split(key)
        log_q = log_proposal(state.position, state.logdensity_grad)
        j = jax.random.categorical(key_site, log_q)
        proposal, back = move(state.position, j)
        new = init_fn(proposal, logdensity_fn)
        log_q_back = log_proposal(proposal, new.logdensity_grad)[back]
        log_ratio = new.logdensity - state.logdensity + log_q_back - log_q[j]
        state, accept_prob, accepted = metropolis_hastings_accept(key_accept, log_ratio, new, state)
        return state, (accept_prob, accepted)

    return one_flip


def _scan_flips(one_flip, num_flips):
    def kernel(rng_key, state: GWGState, logdensity_fn):
        keys = jax.random.split(rng_key, num_flips)
        state, (probs, accepted) = jax.lax.scan(
            lambda s, k: one_flip(s, k, logdensity_fn), state, keys
        )
        rate = jnp.mean(accepted.astype(jnp.result_type(float)))
        return state, GWGInfo(jnp.mean(probs), accepted[-1], rate)

    return kernel


def _build_categorical_kernel(num_categories: int, num_flips: int):
    def log_proposal(x, grad):
        # first-order estimate of f(x with x_i := k) - f(x), halved; the current value excluded
        index = x.astype(jnp.int32)[..., None]
        d = grad - jnp.take_along_axis(grad, index, -1)
        d = jnp.where(jnp.arange(num_categories) == index, -jnp.inf, d)
        return jax.nn.log_softmax(jnp.ravel(d) / 2.0)

    def move(x, j):  # pair j = (site i, category k): set x_i := k; the reverse pair (i, x_i)
        i, k = j // num_categories, j % num_categories
        x_flat = jnp.ravel(x)
        proposal = jnp.reshape(x_flat.at[i].set(k.astype(x.dtype)), x.shape)
        return proposal, i * num_categories + x_flat[i].astype(jnp.int32)

    init_fn = functools.partial(init, num_categories=num_categories)
    return _scan_flips(_one_flip(log_proposal, move, init_fn), num_flips)


def as_top_level_api(
    logdensity_fn: Callable, values=None, num_flips: int = 1, *, num_categories=None
) -> SamplingAlgorithm:
    r"""Gibbs-with-gradients as a ``blackjax.SamplingAlgorithm``.

    It targets high-dimensional binary EBMs where most random single-site proposals would be
    wasted.

    :param logdensity_fn: :math:`\log p(x) = -E(x)`, differentiable in ``x`` (a float array of any
        shape with entries in ``values``); for ``num_categories=K``, of the one-hot embedding
        ``(*shape, K)`` of the integer position.
    :param values: the two values, default ``(0, 1)``; ``(-1, 1)`` for spins.
    :param int num_flips: proposals per step (each costs one value-and-gradient evaluation).
    :param int num_categories: alternatively ``K`` categorical values: integer positions in
        ``0..K-1``, one-hot log density (:func:`~numpyro_ebm.sample_chains` takes the factory
        form and checks the density through the one-hot map, or the built algorithm).
    :return: ``SamplingAlgorithm(init, step)`` with ``GWGState`` and ``GWGInfo``.

    **Example**

    .. code-block:: python

        kernel = functools.partial(numpyro_ebm.gibbs_with_gradients, values=(0, 1), num_flips=8)
        result = numpyro_ebm.sample_chains(jax.random.key(0), logdensity_fn, kernel,
                                           jnp.zeros((256, 64)), num_steps=500)
    """
    if num_categories is not None:
        num_k = int(check_values("gibbs_with_gradients", values, num_categories).size)
        kernel = build_kernel(None, num_flips, num_k)

        return bind_categorical("gibbs_with_gradients", init, kernel, logdensity_fn, num_k)
    vals = check_values("gibbs_with_gradients", values)
    kernel = build_kernel(vals, num_flips)

    def check_position(position):
        position = check_array_position("gibbs_with_gradients", position)
        if not jnp.issubdtype(position.dtype, jnp.floating):
            raise TypeError(
                "gibbs_with_gradients: the position must be a float array (the log density is "
                f"differentiated in x), got dtype {position.dtype}."
            )
        check_in_values("gibbs_with_gradients", position, vals)
        return position

    return bind_algorithm(init, kernel, logdensity_fn, check_position)


gibbs_with_gradients = GenerateSamplingAPI(as_top_level_api, init, build_kernel)
