r"""Single-site Gibbs sampling of any discrete density, BlackJAX-shaped (BlackJAX has none:
blackjax#835).

For the chosen site :math:`i` the kernel evaluates the log density at every allowed value
:math:`v_1, \dots, v_K` (all other sites fixed) and draws from the full conditional

.. math::

    p(x_i = v_k \mid x_{-i}) = \operatorname{softmax}_k\, \log p(x_{-i}, x_i = v_k),

which only needs energy *differences* (:math:`Z` cancels). Random scan (sites uniformly at
random) or systematic scan (sites in order). One step updates ``num_sites_per_step`` sites
(default: as many as there are sites, one sweep).

``gibbs`` is a ``blackjax.GenerateSamplingAPI`` like ``blackjax.mala``: ``gibbs(logdensity_fn,
values=...)`` returns a ``blackjax.SamplingAlgorithm``, and ``gibbs.init`` / ``gibbs.build_kernel``
are the low-level pieces. The other discrete samplers live beside it:
:mod:`numpyro_ebm.sampling.block_gibbs` and :mod:`numpyro_ebm.sampling.gibbs_with_gradients`.
Every Gibbs kernel reports ``GibbsInfo.flip_rate`` (the fraction of site updates that changed a
value), also as ``acceptance_rate`` so that :func:`~numpyro_ebm.sample_chains` shows it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from blackjax import GenerateSamplingAPI
from blackjax.base import SamplingAlgorithm

from numpyro_ebm._validation import check_int
from numpyro_ebm.sampling.chains import bind_algorithm
from numpyro_ebm.sampling.discrete import (
    GibbsInfo,
    check_array_position,
    check_in_values,
    check_values,
)

__all__ = [
    "GibbsInfo",
    "GibbsState",
    "as_top_level_api",
    "build_kernel",
    "gibbs",
    "init",
]


class GibbsState(NamedTuple):
    """State of a single-site Gibbs chain.

    :ivar position: the current configuration, an array of any shape with values in ``values``.
    :ivar logdensity: :math:`\\log p` at ``position`` (up to a constant), a scalar.
    :ivar site: int32 scalar, the next site of a systematic scan (flat index; unused by a random
        scan).
    """

    position: jax.Array
    logdensity: jax.Array
    site: jax.Array


def init(position, logdensity_fn: Callable) -> GibbsState:
    """Initial single-site Gibbs state: ``logdensity_fn(position)``, scan pointer at site 0."""
    position = jnp.asarray(position)
    return GibbsState(position, jnp.asarray(logdensity_fn(position)), jnp.zeros((), jnp.int32))


def build_kernel(values=None, num_categories=None, scan: str = "random", num_sites_per_step=None):
    """Build ``kernel(rng_key, state, logdensity_fn) -> (GibbsState, GibbsInfo)``.

    See :func:`as_top_level_api` for the arguments. ``values`` are cast to the position's dtype.
    """
    vals = check_values("gibbs", values, num_categories)
    if scan not in ("random", "systematic"):
        raise ValueError(f"gibbs: `scan` must be 'random' or 'systematic', got {scan!r}.")
    if num_sites_per_step is not None:
        num_sites_per_step = check_int("num_sites_per_step", num_sites_per_step, 1)
    num_values = vals.size

    def kernel(rng_key, state: GibbsState, logdensity_fn):
        position = state.position
        shape, n = position.shape, math.prod(position.shape)
        steps = n if num_sites_per_step is None else num_sites_per_step
        table = jnp.asarray(vals, dtype=position.dtype)

        def logp_flat(x_flat):
            return logdensity_fn(jnp.reshape(x_flat, shape))

        def update(carry, key):
            x, logd, site, flips = carry
            key_site, key_value = jax.random.split(key)
            if scan == "random":
                i = jax.random.randint(key_site, (), 0, n)
            else:
                i = site % n
            current = x[i]
            if num_values == 2:
                # log p at the current value is known: evaluate the other value only.
                other = jnp.where(current == table[0], table[1], table[0])
                logd_other = logp_flat(x.at[i].set(other))
                flip = jax.random.uniform(key_value) < jax.nn.sigmoid(logd_other - logd)
                new, new_logd = jnp.where(flip, other, current), jnp.where(flip, logd_other, logd)
            else:
                candidates = jnp.tile(x, (num_values, 1)).at[jnp.arange(num_values), i].set(table)
                logds = jax.vmap(logp_flat)(candidates)
                k = jax.random.categorical(key_value, logds)
                new, new_logd = table[k], logds[k]
            flips = flips + (new != current).astype(jnp.int32)
            return (x.at[i].set(new), new_logd, site + 1, flips), None

        carry = (jnp.ravel(position), state.logdensity, state.site, jnp.zeros((), jnp.int32))
        keys = jax.random.split(rng_key, steps)
        (x, logd, site, flips), _ = jax.lax.scan(update, carry, keys)
        rate = flips.astype(jnp.result_type(float)) / steps
        return GibbsState(jnp.reshape(x, shape), logd, site % n), GibbsInfo(rate, rate)

    return kernel


def as_top_level_api(
    logdensity_fn: Callable,
    values=None,
    *,
    num_categories=None,
    scan: str = "random",
    num_sites_per_step=None,
) -> SamplingAlgorithm:
    r"""Single-site Gibbs sampling of a discrete density, as a ``blackjax.SamplingAlgorithm``.

    :param logdensity_fn: :math:`\log p(x) = -E(x)` up to a constant, for one configuration
        ``x``: an array of any shape (e.g. ``(D,)`` or ``(H, W)``) whose entries lie in ``values``.
    :param values: the values each site can take, e.g. ``(0, 1)`` (default), ``(-1, 1)`` for spins,
        ``(0, 1, 2)``.
    :param int num_categories: alternatively ``K``, for values ``0, ..., K-1``.
    :param str scan: ``"random"`` (default; each update picks a site uniformly) or
        ``"systematic"`` (sites in flat order, the position in the scan kept in the state).
    :param int num_sites_per_step: site updates per step; default the number of sites (one sweep).
    :return: ``SamplingAlgorithm(init, step)``: ``init(position) -> GibbsState``,
        ``step(rng_key, state) -> (GibbsState, GibbsInfo)``.

    Cost: one log-density evaluation per update for two values, ``K`` for ``K`` values; this is
    the generic sampler (any energy). Structured models should use a block kernel
    (:func:`~numpyro_ebm.block_gibbs`, a model's own ``kernel(params)``), which updates a whole
    block at once.

    **Example**

    .. code-block:: python

        W = ...  # (D, D) symmetric couplings
        logdensity_fn = lambda x: 0.5 * x @ W @ x + b @ x          # binary units x in {0, 1}^D
        result = numpyro_ebm.sample_chains(
            jax.random.key(0), logdensity_fn, functools.partial(numpyro_ebm.gibbs, values=(0, 1)),
            init_positions=jnp.zeros((512, D)), num_steps=200, num_samples=100)
        result.acceptance_rate  # per-chain flip rate
    """
    vals = check_values("gibbs", values, num_categories)
    kernel = build_kernel(vals, None, scan, num_sites_per_step)

    def check_position(position):
        position = check_array_position("gibbs", position)
        check_in_values("gibbs", position, vals)
        return position

    return bind_algorithm(init, kernel, logdensity_fn, check_position)


gibbs = GenerateSamplingAPI(as_top_level_api, init, build_kernel)
