r"""Metropolised block Gibbs: redraw a block of discrete coordinates from their single-site
conditionals in parallel, with a Metropolis-Hastings correction, for any log density.

For a block :math:`B` of coordinates with :math:`K` values each, every single-site conditional
:math:`p(x_i = v \mid x_{-i})`, :math:`i \in B`, is evaluated at the current :math:`x` (one
batched call of the log density at :math:`|B| K` configurations), all :math:`x_i` are drawn in
parallel, :math:`q(x' \mid x) = \prod_{i \in B} p(x'_i \mid x_{-i})`, and the move is accepted
with probability :math:`\min(1, \pi(x') q(x \mid x') / \pi(x) q(x' \mid x))`: exact for any
block; always accepted (exact block Gibbs) when the block's conditional factorizes. This is the
update :class:`~numpyro_ebm.EBMGibbs` runs on the discrete EBM sites of a model.

**Example**

.. code-block:: python

    x, logp, accepted, flips = metropolised_block_step(
        jax.random.key(0), x, logdensity_fn, idx=np.arange(0, x.size, 2), values=(-1, 1))
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import random

__all__ = ["metropolised_block_step"]


def _block_logps(logdensity_fn, flat, shape, idx, table, chunk_size):
    """``(m, K)``: log density with coordinate ``idx[i]`` set to ``table[k]``, others fixed."""
    m, k = idx.shape[0], table.size
    rows = np.arange(m * k)
    cols = jnp.repeat(idx, k, total_repeat_length=m * k)
    cand = jnp.broadcast_to(flat, (m * k, flat.size)).at[rows, cols].set(jnp.tile(table, m))
    fn = lambda x: logdensity_fn(jnp.reshape(x, shape))  # noqa: E731
    if chunk_size is None:  # about 2^19 entries per batch: memory-bound models run faster
        chunk_size = max(1, 2**19 // max(flat.size, 1))
    if m * k <= chunk_size:
        out = jax.vmap(fn)(cand)
    else:
        out = jax.lax.map(fn, cand, batch_size=chunk_size)
    return jnp.reshape(out, (m, k))


def metropolised_block_step(rng_key, x, logdensity_fn, idx, values, chunk_size=None):
    r"""One exact Metropolised block-Gibbs update of the coordinates ``idx`` of ``x``.

    Draws every :math:`x_i`, :math:`i \in` ``idx``, from its single-site conditional
    :math:`p(x_i \mid x_{-i})` at the current ``x`` (in parallel) and accepts the joint move with
    the Metropolis-Hastings ratio (module docstring): invariant for ``exp(logdensity_fn)``
    whatever the block; always accepted when the block's conditional factorizes.

    :param rng_key: a JAX key.
    :param x: the current configuration, any shape, entries in ``values``.
    :param logdensity_fn: :math:`\log\pi` up to a constant, ``x -> ()``.
    :param idx: flat indices of the block, a 1-D integer array (its length is static; the
        indices may be traced, e.g. scanned over equal-size blocks).
    :param values: the ``K`` values of one coordinate, a 1-D array.
    :param int chunk_size: evaluate the ``len(idx) * K`` configurations this many at a time
        (``lax.map``); default about :math:`2^{19}` entries (``chunk_size * x.size``) per batch.

    Cost: ``2 * len(idx) * K`` evaluations of ``logdensity_fn`` (one batched call at ``x`` and
    one at the proposal; one for a single coordinate), so a sweep over all ``N`` coordinates of a
    generic model is :math:`O(K N)` evaluations, :math:`O(K N^2)` work for a model whose log
    density touches every coordinate.
    :return: ``(x, logdensity, accepted, flips)``: the new configuration, its log density, whether
        the move was accepted and how many coordinates changed.
    """
    shape = x.shape
    flat = jnp.ravel(x)
    table = jnp.asarray(values, flat.dtype)
    idx = jnp.asarray(idx)
    key_draw, key_accept = random.split(rng_key)
    logps = _block_logps(logdensity_fn, flat, shape, idx, table, chunk_size)
    current = jnp.argmax(flat[idx][:, None] == table[None, :], axis=1)
    rows = jnp.arange(idx.shape[0])
    logp_x = logps[0, current[0]]
    new = random.categorical(key_draw, logps, axis=1)
    new_flat = flat.at[idx].set(table[new])
    flips = jnp.sum(new != current)
    if idx.shape[0] == 1:  # a single coordinate: exact Gibbs, the ratio is 1
        return jnp.reshape(new_flat, shape), logps[0, new[0]], jnp.array(True), flips
    logq = logps - jax.nn.logsumexp(logps, axis=1, keepdims=True)
    logps_new = _block_logps(logdensity_fn, new_flat, shape, idx, table, chunk_size)
    logq_new = logps_new - jax.nn.logsumexp(logps_new, axis=1, keepdims=True)
    logp_new = logps_new[0, new[0]]
    log_ratio = logp_new + jnp.sum(logq_new[rows, current]) - logp_x - jnp.sum(logq[rows, new])
    log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
    accept = jnp.log(random.uniform(key_accept)) < log_ratio
    out = jnp.where(accept, new_flat, flat)
    return jnp.reshape(out, shape), jnp.where(accept, logp_new, logp_x), accept, jnp.where(
        accept, flips, 0)
