r"""Partition functions of energy-based models, :math:`Z = \int e^{-E(x)}\,dx` (or a sum).

* :func:`logz_quadrature`: continuous energies in 1 or 2 dimensions, trapezoid rule on a grid.
* :func:`logz_exact`: discrete energies over ``{values}^num_units``, by enumerating every
  configuration.

Both work in log space with :func:`jax.scipy.special.logsumexp`, evaluate the energy in fixed-size
chunks (``lax.map``) so memory stays bounded, and are jittable and differentiable in whatever the
energy closes over (network parameters, couplings):

.. code-block:: python

    @jax.jit
    def test_nll(params, x_test):
        E = lambda x: energy(params, x)
        return E(x_test).mean() + logz_quadrature(E, -5.0, 5.0, dim=2)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import logsumexp

from numpyro_ebm._validation import check_int, is_concrete
from numpyro_ebm.sampling.discrete import check_values

__all__ = ["logz_exact", "logz_quadrature"]

_MAX_CONFIGURATIONS = 2**30

#: :func:`logz_quadrature` warns when the density on the edge of its box exceeds this fraction
#: of its maximum over the grid.
EDGE_TOLERANCE = 1e-6


def _chunked_logsumexp(energy_fn: Callable, make_chunk: Callable, num: int, chunk_size: int, name):
    r""":math:`\log \sum_{m<M} \exp(\log w_m - E(x_m))`, ``chunk_size`` points at a time.

    ``make_chunk(index (c,)) -> (x (c, d), log_w (c,) or scalar, on_edge (c,) or scalar)`` builds
    the points of a chunk on the fly (indices past ``num`` are clipped to the last point and
    masked out). Returns ``(log_sum, num_nan, peak, edge_peak)``: the number of points whose
    energy is NaN, and the largest :math:`-E` over all points and over the points ``on_edge``.
    """
    c = min(chunk_size, num)
    num_chunks = -(-num // c)

    def chunk(k):
        idx = k * c + jnp.arange(c)
        x, log_w, on_edge = make_chunk(jnp.minimum(idx, num - 1))
        energy = jnp.asarray(energy_fn(x))
        if energy.size != c:
            raise ValueError(
                f"{name}: `energy_fn` must map points of shape (n, d) = {x.shape} to n energies "
                f"(shape (n,) or (n, 1)); got an output of shape {energy.shape}."
            )
        energy = energy.reshape(c)
        valid = idx < num
        terms = jnp.where(valid, log_w - energy, -jnp.inf)
        num_nan = jnp.sum(valid & jnp.isnan(energy))
        log_density = jnp.where(valid & ~jnp.isnan(energy), -energy, -jnp.inf)
        edge = jnp.where(jnp.broadcast_to(on_edge, (c,)), log_density, -jnp.inf)
        return logsumexp(terms), num_nan, jnp.max(log_density), jnp.max(edge)

    sums, nans, peaks, edge_peaks = lax.map(chunk, jnp.arange(num_chunks))
    return logsumexp(sums), jnp.sum(nans), jnp.max(peaks), jnp.max(edge_peaks)


def _check_nan(name: str, log_Z, num_nan, num: int, what: str) -> None:
    """Raise when a concrete evaluation met NaN energies (the sum would be NaN)."""
    if not is_concrete((log_Z, num_nan)):
        return
    k = int(num_nan)
    if k:
        raise ValueError(
            f"{name}: `energy_fn` returned NaN at {k} of {num} {what}, so log Z is undefined. "
            "Check the energy (and the parameters it closes over) for NaN in that region."
        )
    if not np.isfinite(float(log_Z)):
        raise ValueError(
            f"{name}: log Z = {float(log_Z)}: `energy_fn` is "
            + ("+inf (zero density) at all" if float(log_Z) < 0 else "-inf or overflows at some")
            + f" of the {num} {what}; expected a finite, normalizable exp(-E)"
            + (" (enlarge or move the box [low, high]?)." if "grid" in what else ".")
        )


def _bounds(low, high, dim):
    """Broadcast ``low``/``high`` to ``(dim,)`` and check them where concrete."""
    low_a, high_a = jnp.asarray(low), jnp.asarray(high)
    for name, a in (("low", low_a), ("high", high_a)):
        if a.ndim > 1:
            raise ValueError(
                f"logz_quadrature: `{name}` must be a scalar or a 1-D array of per-dimension "
                f"bounds; got shape {a.shape}."
            )
    if dim is None:
        sizes = {a.shape[0] for a in (low_a, high_a) if a.ndim == 1}
        if len(sizes) > 1:
            raise ValueError(
                f"logz_quadrature: `low` and `high` have different lengths {low_a.shape}, "
                f"{high_a.shape}."
            )
        dim = sizes.pop() if sizes else 1
    dim = check_int("dim", dim, minimum=1)
    if dim > 2:
        raise ValueError(
            f"logz_quadrature: grid quadrature supports dim 1 or 2 (a grid of num_points**dim "
            f"points); got dim={dim}. Use `logz_ais` (annealed importance sampling) for more "
            f"dimensions."
        )
    for name, a in (("low", low_a), ("high", high_a)):
        if a.ndim == 1 and a.shape[0] != dim:
            raise ValueError(f"logz_quadrature: `{name}` has {a.shape[0]} entries but dim={dim}.")
    dtype = jnp.result_type(float)
    low_a = jnp.broadcast_to(low_a.astype(dtype), (dim,))
    high_a = jnp.broadcast_to(high_a.astype(dtype), (dim,))
    if is_concrete((low_a, high_a)):
        lo, hi = np.asarray(low_a), np.asarray(high_a)
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise ValueError(
                f"logz_quadrature: `low` and `high` must be finite; got low={low!r}, high={high!r}."
            )
        if np.any(lo >= hi):
            raise ValueError(
                f"logz_quadrature: expected low < high in every dimension; got low={low!r}, "
                f"high={high!r}."
            )
    return low_a, high_a, dim


def logz_quadrature(
    energy_fn: Callable,
    low,
    high,
    num_points: int = 512,
    *,
    dim: int | None = None,
    chunk_size: int = 65_536,
):
    r"""Log partition function of a 1-D or 2-D energy by the trapezoid rule on a grid.

    .. math::

        \log Z = \log \int_{[l, h]} e^{-E(x)}\,dx
               \approx \operatorname{logsumexp}_m \big(\log w_m - E(x_m)\big),

    with ``x_m`` the ``num_points**dim`` nodes of a regular grid on the box ``[low, high]`` and
    ``w_m`` the product over dimensions of the trapezoid weights (:math:`\Delta` inside,
    :math:`\Delta/2` at the two ends, :math:`\Delta = (h - l)/(n - 1)`). The box must hold all
    but a negligible part of the mass. For a smooth energy whose density is negligible at the
    boundary, the trapezoid rule converges faster than any power of ``Delta`` (e.g. a Gaussian of
    std ``sigma`` is exact to ~``exp(-2 pi^2 sigma^2 / Delta^2)``), so ``Delta <= sigma / 2`` is
    plenty; float32 summation limits the accuracy to about ``1e-5`` relative.

    :param energy_fn: ``E``. In 2-D, maps points ``(n, 2) -> (n,)`` (``(n, 1)`` is accepted).
        In 1-D it is called on points of shape ``(n, 1)``; both an energy of the last axis
        (``(n, 1) -> (n,)``, e.g. ``lambda x: 0.5 * (x**2).sum(-1)``) and an elementwise energy
        (``(n, 1) -> (n, 1)``, e.g. ``lambda x: 0.5 * x**2``) work: the output is reshaped to
        ``(n,)``. Any parameters it closes over may be traced (inside ``jit``/``grad``).
    :param low: lower bound, a scalar (same in every dimension) or a ``(dim,)`` array.
    :param high: upper bound, same form; ``low < high`` and both finite.
    :param int num_points: grid points per dimension, ``>= 2``.
    :param int dim: 1 or 2; by default the length of ``low``/``high`` when one of them is an
        array, and 1 when both are scalars (pass ``dim=2`` for a 2-D energy with scalar bounds).
    :param int chunk_size: energies are evaluated ``chunk_size`` points at a time (``lax.map``).
    :return: ``log Z``, a scalar.
    :raises ValueError: bad bounds, ``num_points < 2``, ``dim > 2`` (use ``logz_ais``), an
        energy output whose size is not the number of points, or (on concrete values) an energy
        that is NaN at some grid point (the message gives the count).
    :warns RuntimeWarning: (on concrete values) when the density on the edge of the box exceeds
        ``EDGE_TOLERANCE`` (1e-6) times its maximum over the grid: the box cuts off mass.
    """
    if not callable(energy_fn):
        raise TypeError(f"logz_quadrature: `energy_fn` must be callable; got {energy_fn!r}.")
    n = check_int("num_points", num_points, minimum=2)
    chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    low, high, dim = _bounds(low, high, dim)

    t = jnp.linspace(0.0, 1.0, n)
    axes = low[:, None] + (high - low)[:, None] * t  # (dim, n)
    log_end = jnp.where((jnp.arange(n) == 0) | (jnp.arange(n) == n - 1), math.log(0.5), 0.0)
    log_w_axes = jnp.log((high - low) / (n - 1))[:, None] + log_end  # (dim, n)
    end = (jnp.arange(n) == 0) | (jnp.arange(n) == n - 1)
    if dim == 1:
        points, log_w, on_edge = axes[0][:, None], log_w_axes[0], end
    else:
        grid = jnp.stack(jnp.meshgrid(axes[0], axes[1], indexing="ij"), axis=-1)
        points = grid.reshape(-1, 2)
        log_w = (log_w_axes[0][:, None] + log_w_axes[1][None, :]).reshape(-1)
        on_edge = (end[:, None] | end[None, :]).reshape(-1)
    log_Z, num_nan, peak, edge_peak = _chunked_logsumexp(
        energy_fn,
        lambda i: (points[i], log_w[i], on_edge[i]),
        points.shape[0],
        chunk_size,
        "logz_quadrature",
    )
    _check_nan("logz_quadrature", log_Z, num_nan, points.shape[0], "grid points")
    if is_concrete((peak, edge_peak)) and np.isfinite(float(peak)):
        ratio = math.exp(min(float(edge_peak) - float(peak), 0.0))
        if ratio > EDGE_TOLERANCE:
            warnings.warn(
                f"logz_quadrature: the density exp(-E) on the edge of the box [low, high] is "
                f"{ratio:.3g} of its maximum (more than {EDGE_TOLERANCE:g}): the box cuts off "
                "mass and log Z is underestimated. Enlarge the box (`low`, `high`) until the "
                "density at its edge is negligible.",
                RuntimeWarning,
                stacklevel=2,
            )
    return log_Z


def logz_exact(
    energy_fn: Callable,
    num_units: int,
    values: Sequence[float] = (0, 1),
    chunk_size: int = 65_536,
):
    r"""Exact log partition function of a discrete energy by enumerating every configuration.

    .. math::

        \log Z = \log \sum_{s \in \mathcal V^{n}} e^{-E(s)}, \qquad
        \mathcal V = \text{values}, \quad n = \text{num\_units}.

    Configuration number ``k`` (``0 <= k < |V|^n``) sets unit ``i`` to ``values[d_i]``, with
    ``d_i`` the ``i``-th base-``|V|`` digit of ``k`` (least significant first). Configurations
    are built and evaluated ``chunk_size`` at a time inside ``lax.map`` and combined with a
    log-sum-exp, so memory is ``O(chunk_size * num_units)``. Jittable and differentiable in what
    ``energy_fn`` closes over.

    :param energy_fn: ``E``, mapping configurations ``(b, num_units)`` (float32 entries from
        ``values``) to energies ``(b,)`` (``(b, 1)`` accepted).
    :param int num_units: ``n >= 1``; at most ``2**30`` configurations in total (``n <= 30`` for
        binary units).
    :param values: the states of one unit, e.g. ``(0, 1)`` (Bernoulli/RBM) or ``(-1, 1)``
        (Ising spins); at least two distinct finite numbers.
    :param int chunk_size: configurations per chunk.
    :return: ``log Z``, a scalar.
    :raises ValueError: (on concrete values) an energy that is NaN at some configuration.
    """
    if not callable(energy_fn):
        raise TypeError(f"logz_exact: `energy_fn` must be callable; got {energy_fn!r}.")
    n = check_int("num_units", num_units, minimum=1)
    chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    vals = check_values("logz_exact", values).astype(np.float64)
    v = vals.size
    total = v**n
    if total > _MAX_CONFIGURATIONS:
        raise ValueError(
            f"logz_exact: {v}^{n} = {total:.3g} configurations is too many to enumerate (at most "
            f"2^30, e.g. num_units <= 30 for binary units). Use `logz_ais` (annealed importance "
            f"sampling), or a model-specific trick (e.g. summing an RBM's hidden units "
            f"analytically)."
        )
    states = jnp.asarray(vals, dtype=jnp.float32)
    powers = jnp.asarray([v**i for i in range(n)], dtype=jnp.int32)

    def configurations(index):
        digits = (index[:, None] // powers) % v  # (b, n)
        return states[digits], 0.0, False

    log_Z, num_nan, _, _ = _chunked_logsumexp(
        energy_fn, configurations, total, chunk_size, "logz_exact"
    )
    _check_nan("logz_exact", log_Z, num_nan, total, "configurations")
    return log_Z
