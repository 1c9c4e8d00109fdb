r"""Block Gibbs sampling: redraw whole blocks from their exact conditionals, in turn.

For variables split into blocks :math:`x = (x_{B_1}, \dots, x_{B_m})` one step draws
:math:`x_{B_k} \sim p(x_{B_k} \mid x_{-B_k})` for :math:`k = 1, \dots, m`. When the variables
inside a block are conditionally independent (the two colours of a checkerboard lattice, the
visible and hidden layers of an RBM) each conditional factorizes and is drawn in parallel.

``block_gibbs`` is a ``blackjax.GenerateSamplingAPI``: ``block_gibbs(logdensity_fn,
conditional_samplers)`` returns a ``blackjax.SamplingAlgorithm``; ``block_gibbs.init`` and
``block_gibbs.build_kernel`` are the low-level pieces.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from blackjax import GenerateSamplingAPI
from blackjax.base import SamplingAlgorithm

from numpyro_ebm.sampling.chains import bind_algorithm
from numpyro_ebm.sampling.discrete import GibbsInfo, flip_rate

__all__ = ["BlockGibbsState", "as_top_level_api", "block_gibbs", "build_kernel", "init"]


class BlockGibbsState(NamedTuple):
    """State of a block Gibbs chain: the position (any pytree) and its log density."""

    position: object
    logdensity: jax.Array


def init(position, logdensity_fn: Callable) -> BlockGibbsState:
    """Initial state: the position and ``logdensity_fn(position)``."""
    return BlockGibbsState(position, jnp.asarray(logdensity_fn(position)))


def build_kernel(conditional_samplers: Sequence[Callable]):
    """Build ``kernel(rng_key, state, logdensity_fn) -> (BlockGibbsState, GibbsInfo)``.

    ``conditional_samplers`` as in :func:`as_top_level_api`; the info's flip rate is the
    fraction of entries the step changed.
    """
    if isinstance(conditional_samplers, Callable) or not all(
        callable(s) for s in conditional_samplers
    ):
        raise TypeError(
            "block_gibbs: `conditional_samplers` must be a sequence of functions "
            "(rng_key, position) -> position, one per block; got "
            f"{conditional_samplers!r}."
        )
    samplers = tuple(conditional_samplers)
    if len(samplers) == 0:
        raise ValueError("block_gibbs: `conditional_samplers` is empty; give one per block.")

    def kernel(rng_key, state: BlockGibbsState, logdensity_fn):
        keys = jax.random.split(rng_key, len(samplers))
        position = state.position
        for key, sample_block in zip(keys, samplers):
            position = sample_block(key, position)
        rate = flip_rate(state.position, position)
        new_state = BlockGibbsState(position, jnp.asarray(logdensity_fn(position)))
        return new_state, GibbsInfo(rate, rate)

    return kernel


def as_top_level_api(
    logdensity_fn: Callable, conditional_samplers: Sequence[Callable]
) -> SamplingAlgorithm:
    r"""Block Gibbs sampling as a ``blackjax.SamplingAlgorithm``.

    :param logdensity_fn: :math:`\log p(x)` up to a constant, for one position; only used to report
        ``state.logdensity`` (evaluated once per step).
    :param conditional_samplers: a sequence of functions ``(rng_key, position) -> position``, the
        ``k``-th returning the position with block ``k`` redrawn from its conditional and
        everything else unchanged. ``position`` may be any pytree (e.g. ``(v, h)`` for an RBM).
    :return: ``SamplingAlgorithm(init, step)`` with ``BlockGibbsState`` and ``GibbsInfo`` (the flip
        rate: fraction of entries changed by the step).

    **Example** (a checkerboard Ising lattice through the generic kernel; the model's own
    kernel is the fused, faster version of the same chain)

    .. code-block:: python

        ising = numpyro_ebm.models.Ising((32, 32))
        params = ising.init_params(beta=0.4)
        kernel = functools.partial(numpyro_ebm.block_gibbs,
                                   conditional_samplers=ising.block_conditionals(params))
        result = numpyro_ebm.sample_chains(jax.random.key(0),
                                           functools.partial(ising.logdensity, params), kernel,
                                           ising.init_spins(jax.random.key(1), 64), 500)
    """
    return bind_algorithm(init, build_kernel(conditional_samplers), logdensity_fn)


block_gibbs = GenerateSamplingAPI(as_top_level_api, init, build_kernel)
