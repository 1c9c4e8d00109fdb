r"""Hypercubic lattices of :math:`\pm 1` spins: neighbour sums, bond sums, proper colourings and
the fused colour-block Gibbs sweep behind :class:`~numpyro_ebm.models.Ising`.

A lattice is the last ``len(shape)`` axes of an array (leading axes are a batch, e.g. chains);
``periodic`` wraps every side. A *colouring* assigns each site a colour such that no two
neighbours share one: the sites of one colour are conditionally independent given the rest, so a
Gibbs sweep redraws each colour class in parallel,

.. math::

    p(s_i = +1 \mid s_{-i}) = \sigma(2 m_i) = \tfrac12 (1 + \tanh m_i),\qquad
    m_i = c \sum_{j \sim i} s_j + h_i .

**Example**

.. code-block:: python

    colouring((3, 3), periodic=True)          # greedy: the 3x3 torus is not bipartite
    x, energy, flips = colour_block_sweep(jax.random.key(0), s, 0.4, 0.0, (64, 64), True)
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

try:  # the raw threefry hash (public in jax.extend); fall back to jax.random.bits without it
    from jax.extend.random import threefry_2x32 as _threefry_2x32
except ImportError:  # pragma: no cover
    _threefry_2x32 = None

__all__ = [
    "bond_sum", "colour_block_sweep", "colouring", "neighbor_sum", "uniform01", "uniform_bits",
    "uniform_pm1",
]


def _pad(x, axes, periodic: bool):
    """Pad ``x`` by one site on both sides of each of ``axes``: wrap-around or zeros."""
    widths = [(0, 0)] * x.ndim
    for axis in axes:
        widths[axis] = (1, 1)
    return jnp.pad(x, widths, mode="wrap" if periodic else "constant")


def neighbor_sum(s, ndim: int, periodic: bool):
    """:math:`\\sum_{j \\sim i} s_j` at every site (the 2*ndim nearest neighbours; zeros beyond
    open boundaries); the lattice is the last ``ndim`` axes of ``s``. Built from one padded copy
    and slices (XLA on CPU fuses these better than ``jnp.roll``)."""
    axes = tuple(range(s.ndim - ndim, s.ndim))
    p = _pad(s, axes, periodic)
    total = 0.0
    for axis in axes:
        for offset in (-1, 1):
            index = [slice(1, p.shape[a] - 1) if a in axes else slice(None) for a in range(s.ndim)]
            index[axis] = slice(1 + offset, p.shape[axis] - 1 + offset)
            total = total + p[tuple(index)]
    return total


def bond_sum(s, ndim: int, periodic: bool):
    """:math:`\\sum_{\\langle ij \\rangle} s_i s_j` over the last ``ndim`` axes, each bond once
    (a periodic side of length 2 has both bonds between its two sites); ``(..., *shape) ->
    (...)``."""
    axes = tuple(range(s.ndim - ndim, s.ndim))
    total = 0.0
    for axis in axes:
        if periodic:
            prod = s * jnp.roll(s, -1, axis)
        else:
            n = s.shape[axis]
            prod = jax.lax.slice_in_dim(s, 0, n - 1, axis=axis) * jax.lax.slice_in_dim(
                s, 1, n, axis=axis)
        total = total + jnp.sum(prod, axis=axes)
    return total


@functools.lru_cache(maxsize=64)
def colouring(shape: tuple, periodic: bool) -> np.ndarray:
    """A proper colouring of the lattice graph, an ``int`` array of ``shape``: the checkerboard
    parity when the lattice is bipartite (open, or every periodic side even), else greedy in index
    order (at most ``2 * len(shape) + 1`` colours). Cached; do not modify the result."""
    parity = np.indices(shape).sum(0) % 2
    if not periodic or all(d % 2 == 0 for d in shape):
        return parity
    colours = np.full(shape, -1)
    for idx in np.ndindex(*shape):
        taken = set()
        for axis, d in enumerate(shape):
            for offset in (-1, 1):
                j = list(idx)
                j[axis] = (j[axis] + offset) % d
                taken.add(int(colours[tuple(j)]))
        colours[idx] = min(c for c in range(len(taken) + 1) if c not in taken)
    return colours


def uniform_bits(rng_key, shape, offset: int = 0):
    """32 random bits per entry of ``shape`` (``uint32``), from counters ``offset .. offset + n``.

    For threefry keys (JAX's default) the bits come from the raw hash ``threefry_2x32(key,
    offset + 0..n-1)``, two 32-bit words per call, where ``jax.random.bits`` with the default
    ``jax_threefry_partitionable`` makes one call per word and XORs the pair. Disjoint counter
    ranges of one key give independent bits: a sweep draws each block's from its own range, with
    no key split, and the draws are separate operations that need not wait for each other. Other
    key implementations use ``jax.random.bits`` (of ``fold_in(key, offset)`` when ``offset``).
    """
    n = math.prod(shape)
    typed = jnp.issubdtype(rng_key.dtype, jax.dtypes.prng_key)
    if _threefry_2x32 is not None and (
        not typed or str(jax.random.key_impl(rng_key)) == "threefry2x32"
    ):
        data = jax.random.key_data(rng_key) if typed else rng_key
        counts = jax.lax.iota(jnp.uint32, n) + np.uint32(offset)
        return _threefry_2x32(data, counts).reshape(shape)
    if offset:
        rng_key = jax.random.fold_in(rng_key, offset)
    return jax.random.bits(rng_key, shape, jnp.uint32)


def _one_to_two(bits):
    """Floats in [1, 2) from the top 23 of 32 random bits (the mantissa)."""
    return jax.lax.bitcast_convert_type((bits >> 9) | np.uint32(0x3F800000), jnp.float32)


def uniform01(rng_key, shape, dtype, offset: int = 0):
    """Uniform[0, 1) draws of ``shape`` (23 random mantissa bits, like ``jax.random.uniform``)
    from the counters ``offset .. offset + n`` of ``rng_key`` (:func:`uniform_bits`)."""
    return (_one_to_two(uniform_bits(rng_key, shape, offset)) - 1.0).astype(dtype)


def uniform_pm1(rng_key, shape, dtype):
    """Uniform(-1, 1) draws of ``shape`` (23 random mantissa bits, like ``jax.random.uniform``),
    from :func:`uniform_bits`. Kept (instead of ``jax.random.uniform(key, shape, minval=-1,
    maxval=1)``) because a whole Ising sweep is more than 10% slower without it on CPU (measured
    A/B, see ``benchmarks/RESULTS.md``).
    """
    return (2.0 * _one_to_two(uniform_bits(rng_key, shape)) - 3.0).astype(dtype)


def colour_block_sweep(rng_key, x, coupling, field, shape: tuple, periodic: bool):
    r"""One Gibbs sweep over every colour class of :func:`colouring` for the energy
    :math:`E(s) = -c \sum_{\langle ij\rangle} s_i s_j - \sum_i h_i s_i` (log density
    :math:`-E`; scale ``coupling`` and ``field`` by an inverse temperature beforehand).

    Each site gets one Uniform(-1, 1) draw :math:`u_i` and becomes +1 iff
    :math:`u_i < \tanh(c\,n_i + h_i)`. Bipartite 2-D lattices of even width are swept in the
    two-colour layout (even and odd sites, each ``(H, W/2)``), so each half-sweep touches its own
    colour only; other lattices use one full-lattice mask per colour.

    :param rng_key: a JAX key.
    :param x: spins, a float array ``(..., *shape)``.
    :param coupling: :math:`c`, a scalar.
    :param field: :math:`h`, a scalar or an array broadcastable to ``shape``.
    :return: ``(x, energy, flips)``: the new spins, :math:`E` of the new spins and the number of
        changed spins, the last two of shape ``(...)``. On bipartite lattices the energy comes at
        no extra cost from the neighbour sums of the last colour (every bond has one endpoint of
        that colour, and its neighbours are final).
    """
    ftype = x.dtype
    ndim = len(shape)
    lattice = tuple(range(x.ndim - ndim, x.ndim))
    coupling = jnp.asarray(coupling, ftype)
    field = jnp.broadcast_to(jnp.asarray(field, ftype), shape)
    bipartite = not periodic or all(d % 2 == 0 for d in shape)
    if bipartite and ndim == 2 and shape[1] % 2 == 0:
        return _split_sweep(rng_key, x, coupling, field, shape, periodic)
    colours = colouring(shape, periodic)
    u = uniform_pm1(rng_key, x.shape, ftype)  # each site is redrawn once per sweep
    y = x
    for k in range(int(colours.max()) + 1):
        mask = jnp.asarray(colours == k)
        nb = neighbor_sum(y, ndim, periodic)
        new = jnp.where(u < jnp.tanh(coupling * nb + field), 1.0, -1.0).astype(ftype)
        y = jnp.where(mask, new, y)
    # without the barrier XLA may fuse the reductions with their producers and recompute the
    # random draws for each
    y, nb = jax.lax.optimization_barrier((y, nb))
    if bipartite:
        energy = -jnp.sum(jnp.where(mask, y * coupling * nb, 0.0) + field * y, lattice)
    else:
        energy = -coupling * bond_sum(y, ndim, periodic) - jnp.sum(field * y, lattice)
    return y, energy, jnp.sum(y != x, lattice).astype(ftype)


def _split_sweep(rng_key, x, coupling, field, shape, periodic):
    """:func:`colour_block_sweep` on a bipartite 2-D lattice of even width, two-colour layout."""
    height, width = shape
    ftype = x.dtype
    row_even = (jnp.arange(height) % 2 == 0)[:, None]

    def split(y):
        pairs = jnp.reshape(y, y.shape[:-1] + (width // 2, 2))
        p0, p1 = pairs[..., 0], pairs[..., 1]
        return jnp.where(row_even, p0, p1), jnp.where(row_even, p1, p0)

    def merge(a, b):
        pairs = jnp.stack([jnp.where(row_even, a, b), jnp.where(row_even, b, a)], -1)
        return jnp.reshape(pairs, pairs.shape[:-2] + (width,))

    def neighbours(other, left_on_even_rows):
        # colour A at (i, k) sits at column 2k + i % 2; its vertical neighbours are
        # other[i +- 1, k], its horizontal ones other[i, k] and other[i, k -+ 1].
        q = _pad(other, (other.ndim - 2, other.ndim - 1), periodic)
        up, down = q[..., :-2, 1:-1], q[..., 2:, 1:-1]
        left, right = q[..., 1:-1, :-2], q[..., 1:-1, 2:]
        side = jnp.where(row_even, left, right) if left_on_even_rows else jnp.where(
            row_even, right, left)
        return up + down + other + side

    field_a, field_b = split(field)
    a, b = split(x)
    u = uniform_pm1(rng_key, (2,) + a.shape, ftype)
    a_new = jnp.where(u[0] < jnp.tanh(coupling * neighbours(b, True) + field_a), 1.0, -1.0)
    a_new = a_new.astype(ftype)
    nb_b = neighbours(a_new, False)
    b_new = jnp.where(u[1] < jnp.tanh(coupling * nb_b + field_b), 1.0, -1.0).astype(ftype)
    # the barrier keeps XLA from fusing the reductions with their producers and recomputing the
    # random draws for each (4x slower under vmap on CPU)
    a_new, b_new, nb_b = jax.lax.optimization_barrier((a_new, b_new, nb_b))
    half = tuple(range(a.ndim - 2, a.ndim))
    energy = -jnp.sum(b_new * (coupling * nb_b + field_b) + field_a * a_new, half)
    flips = jnp.sum(a_new != a, half) + jnp.sum(b_new != b, half)
    return merge(a_new, b_new), energy, flips.astype(ftype)
