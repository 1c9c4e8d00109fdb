r"""Curves plus noise: :func:`two_moons`, :func:`swiss_roll`, :func:`spirals` (class
:class:`NoisyCurves`), exact up to a 1-D Gauss-Legendre quadrature.

A uniform variable ``u`` on ``[0, 1]`` is mapped onto a curve ``c_k(u)``, plus noise:

.. math::

    p(x) = \sum_k w_k \int_0^1 K(x - c_k(u))\, du,

with ``K`` an isotropic Gaussian (optionally a uniform box convolved with a Gaussian). The
integral is evaluated by fixed composite Gauss-Legendre quadrature (``num_panels`` panels of 8
nodes each) and a log-sum-exp; the defaults keep the quadrature error of ``log_prob`` below
``1e-4`` nats wherever the density is above ``1e-6`` of its maximum (checked in the tests against
4x the nodes).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import logsumexp

from numpyro_ebm._validation import check_int, check_positive
from numpyro_ebm.datasets.base import (
    LOG_2PI,
    Toy2D,
    check_points,
    check_sample_args,
    log_interval_mass,
    normalized_log_weights,
)

__all__ = ["NoisyCurves", "spirals", "swiss_roll", "two_moons"]

_GL_ORDER = 8  # Gauss-Legendre nodes per panel
_POINTS_PER_BLOCK = 16_384  # NoisyCurves.log_prob evaluates larger batches block by block


def _gauss_legendre_nodes(edges):
    """Composite Gauss-Legendre nodes and weights on ``[edges[0], edges[-1]]`` (numpy)."""
    t, w = np.polynomial.legendre.leggauss(_GL_ORDER)
    edges = np.asarray(edges, dtype=np.float64)
    lo, hi = edges[:-1, None], edges[1:, None]
    nodes = 0.5 * (hi - lo) * t + 0.5 * (hi + lo)
    weights = 0.5 * (hi - lo) * w
    return nodes.reshape(-1), weights.reshape(-1)


def _arclength_edges(curves, warp, num_panels, num_grid=20_001):
    """Panel edges in ``v`` at equal arclength of the fastest curve ``c(warp(v))`` (numpy)."""
    v = np.linspace(0.0, 1.0, num_grid)
    u = warp(jnp.asarray(v, dtype=jnp.float32))
    speed = np.zeros(num_grid - 1)
    for c in curves:
        pts = np.asarray(c(u), dtype=np.float64)
        speed = np.maximum(speed, np.linalg.norm(np.diff(pts, axis=0), axis=-1))
    arclength = np.concatenate([[0.0], np.cumsum(speed + 1e-12)])
    edges = np.interp(np.linspace(0.0, arclength[-1], num_panels + 1), arclength, v)
    edges[0], edges[-1] = 0.0, 1.0
    return edges


class NoisyCurves(Toy2D):
    r"""A mixture of curves traversed by a uniform variable, plus (box-)Gaussian noise.

    Generative process: ``k ~ Cat(w)``, ``u ~ U(0, 1)``, ``v ~ U([-a, a]^2)`` (``a = jitter``; no
    ``v`` when ``jitter = 0``), ``eps ~ N(0, I)``,

    .. math::

        x = c_k(u) + v + \sigma\,\varepsilon, \qquad
        p(x) = \sum_k w_k \int_0^1 K(x - c_k(u))\,du,

    with :math:`K(y) = \prod_{d=1}^2 \frac{1}{2a}\big[\Phi(\tfrac{y_d + a}{\sigma}) -
    \Phi(\tfrac{y_d - a}{\sigma})\big]` (or :math:`\mathcal N(y; 0, \sigma^2 I)` when
    ``a = 0``). The integral is computed after the substitution ``u = warp(v)``,
    :math:`\int_0^1 K(x - c_k(\mathrm{warp}(v)))\,\mathrm{warp}'(v)\,dv`, by a composite
    Gauss-Legendre rule in ``v`` (8 nodes per panel, panels between ``panel_edges``), so
    ``log_prob`` is a log-sum-exp over ``M = K * 8 * num_panels`` fixed curve points, evaluated in
    chunks of ``chunk_size`` curve points and blocks of 16384 input points (memory
    ``O(16384 * chunk_size)`` whatever the batch). ``warp`` lets a curve with a
    singular parametrization (``c(sqrt(u))``) be integrated in a variable where it is smooth.

    :param curves: tuple of ``K`` callables ``c_k: u (...) -> (..., 2)`` written in ``jax.numpy``.
    :param float std: Gaussian noise ``sigma`` > 0.
    :param float jitter: half-width ``a >= 0`` of the uniform box noise.
    :param weights: optional ``(K,)`` curve weights; uniform by default.
    :param panel_edges: increasing quadrature panel edges from 0 to 1; by default
        ``num_panels + 1`` edges at equal arclength (of the fastest curve at each ``u``), so every
        panel covers the same length of curve.
    :param int num_panels: number of panels when ``panel_edges`` is not given.
    :param warp: optional increasing smooth bijection ``v -> u`` of ``[0, 1]`` (``jax.numpy``);
        identity by default.
    :param int chunk_size: number of curve points per log-sum-exp chunk.
    """

    pytree_data_fields = ("std", "log_weights", "nodes", "node_log_weights")
    pytree_aux_fields = ("curves", "jitter", "chunk_size")

    def __init__(
        self,
        curves,
        std,
        jitter: float = 0.0,
        weights=None,
        *,
        panel_edges=None,
        num_panels: int = 64,
        warp=None,
        chunk_size: int = 128,
        validate_args=None,
    ):
        curves = tuple(curves) if isinstance(curves, (tuple, list)) else (curves,)
        if not curves or not all(callable(c) for c in curves):
            raise TypeError(
                f"NoisyCurves: `curves` must be callables u -> (..., 2); got {curves!r}."
            )
        check_positive("std", std)
        if not (isinstance(jitter, (int, float)) and math.isfinite(jitter) and jitter >= 0):
            raise ValueError(f"NoisyCurves: `jitter` must be a float >= 0; got {jitter!r}.")
        self.chunk_size = check_int("chunk_size", chunk_size, minimum=1)
        num_panels = check_int("num_panels", num_panels, minimum=1)
        if warp is None:
            warp = lambda v: v
        elif not callable(warp):
            raise TypeError(f"NoisyCurves: `warp` must be a callable v -> u; got {warp!r}.")
        if panel_edges is None:
            with jax.ensure_compile_time_eval():  # static geometry, also when built under jit
                edges = _arclength_edges(curves, warp, num_panels)
        else:
            edges = panel_edges
        edges = np.asarray(edges, dtype=np.float64)
        if edges.ndim != 1 or edges.size < 2 or edges[0] != 0 or edges[-1] != 1:
            raise ValueError("NoisyCurves: `panel_edges` must be increasing from 0 to 1.")
        if np.any(np.diff(edges) <= 0):
            raise ValueError("NoisyCurves: `panel_edges` must be strictly increasing.")
        self.curves = curves
        self.std = jnp.asarray(std, dtype=jnp.float32)
        self.jitter = float(jitter)
        self.log_weights = normalized_log_weights(weights, len(curves), "NoisyCurves")
        with jax.ensure_compile_time_eval():
            v, wq = _gauss_legendre_nodes(edges)
            v = jnp.asarray(v, dtype=jnp.float32)
            u = warp(v)
            log_wq = jnp.log(jnp.asarray(wq, dtype=jnp.float32) * jax.vmap(jax.grad(warp))(v))
            self.nodes = jnp.concatenate([c(u) for c in curves], axis=0)  # (K * J, 2)
            self.node_log_weights = (self.log_weights[:, None] + log_wq).reshape(-1)
        super().__init__(validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        shape = check_sample_args(key, sample_shape)
        k_comp, k_u, k_box, k_noise = jax.random.split(key, 4)
        comp = jax.random.categorical(k_comp, self.log_weights, shape=shape)
        u = jax.random.uniform(k_u, shape)
        points = jnp.stack([c(u) for c in self.curves], axis=0)  # (K, ..., 2)
        x = jnp.take_along_axis(points, comp[None, ..., None], axis=0)[0]
        if self.jitter > 0:
            x = x + jax.random.uniform(k_box, shape + (2,), minval=-self.jitter, maxval=self.jitter)
        return x + self.std * jax.random.normal(k_noise, shape + (2,))

    def _log_kernel(self, y):
        """``log K(y)`` for offsets ``y (..., 2)``."""
        s = self.std
        if self.jitter == 0.0:
            return -0.5 * jnp.sum(y**2, axis=-1) / s**2 - LOG_2PI - 2.0 * jnp.log(s)
        a = self.jitter
        ay = jnp.abs(y)  # the kernel is even in each coordinate
        log_mass = log_interval_mass((-a - ay) / s, (a - ay) / s)
        return jnp.sum(log_mass, axis=-1) - 2.0 * math.log(2.0 * a)

    def _log_prob_flat(self, x):
        """``log p`` of points ``x (n, 2)``: log-sum-exp over node chunks."""
        m = self.nodes.shape[0]
        c = min(self.chunk_size, m)
        n_chunks = -(-m // c)
        pad = n_chunks * c - m
        nodes = jnp.concatenate([self.nodes, jnp.repeat(self.nodes[-1:], pad, axis=0)], axis=0)
        logw = jnp.concatenate([self.node_log_weights, jnp.full((pad,), -jnp.inf)])
        nodes = nodes.reshape(n_chunks, c, 2)
        logw = logw.reshape(n_chunks, c)

        def chunk_lse(args):
            pts, lw = args
            return logsumexp(lw + self._log_kernel(x[:, None, :] - pts), axis=-1)

        return logsumexp(lax.map(chunk_lse, (nodes, logw)), axis=0)

    def log_prob(self, value):
        x = check_points(value)
        batch = x.shape[:-1]
        flat = x.reshape(-1, 2)
        n = flat.shape[0]
        if n <= _POINTS_PER_BLOCK:
            return self._log_prob_flat(flat).reshape(batch)
        # large batches (grids): blocks of points, so memory stays O(block * chunk_size)
        num_blocks = -(-n // _POINTS_PER_BLOCK)
        flat = jnp.concatenate([flat, jnp.zeros((num_blocks * _POINTS_PER_BLOCK - n, 2))])
        out = lax.map(self._log_prob_flat, flat.reshape(num_blocks, _POINTS_PER_BLOCK, 2))
        return out.reshape(-1)[:n].reshape(batch)


def two_moons(std: float = 0.2, *, num_panels: int = 24):
    r"""Two interleaved half circles (FFJORD ``moons``: ``2 * make_moons(noise=0.1) + (-1, -0.2)``).

    With ``t = pi u``: upper moon :math:`2(\cos t, \sin t) + (-1, -0.2)`, lower moon
    :math:`2(1 - \cos t, \tfrac12 - \sin t) + (-1, -0.2)`, weight 1/2 each, Gaussian noise
    ``std = 0.2`` (sklearn's 0.1 times 2). sklearn spaces ``t`` evenly; here ``t`` is uniform.
    Density: 1-D quadrature over ``u`` (see :class:`NoisyCurves`).
    """

    def upper(u):
        t = jnp.pi * u
        return jnp.stack([2.0 * jnp.cos(t) - 1.0, 2.0 * jnp.sin(t) - 0.2], axis=-1)

    def lower(u):
        t = jnp.pi * u
        return jnp.stack([1.0 - 2.0 * jnp.cos(t), 0.8 - 2.0 * jnp.sin(t)], axis=-1)

    return NoisyCurves((upper, lower), std, num_panels=num_panels)


def swiss_roll(std: float = 0.2, *, num_panels: int = 64):
    r"""Swiss roll (FFJORD ``swissroll``: ``make_swiss_roll(noise=1.0)[:, [0, 2]] / 5``).

    ``t = 1.5 pi (1 + 2u)``, :math:`c(u) = \tfrac15 (t\cos t,\ t\sin t)`, Gaussian noise
    ``std = 0.2``. Density: 1-D quadrature over ``u`` (see :class:`NoisyCurves`).
    """

    def roll(u):
        t = 1.5 * jnp.pi * (1.0 + 2.0 * u)
        return jnp.stack([t * jnp.cos(t), t * jnp.sin(t)], axis=-1) / 5.0

    return NoisyCurves(roll, std, num_panels=num_panels)


def spirals(std: float = 0.111, jitter: float = 0.0, *, num_panels: int = 64):
    r"""Two interleaved spirals (FFJORD ``2spirals``).

    ``n = 3 pi sqrt(u)`` (540 degrees), first arm
    :math:`c(u) = \tfrac13(-n\cos n + \tfrac14,\ n\sin n + \tfrac14)`, second arm ``-c(u)``,
    weight 1/2 each, isotropic Gaussian noise ``std``.

    FFJORD adds a uniform jitter ``U(0, 0.5)/3`` per coordinate before Gaussian noise of std 0.1;
    the ``1/4`` shift above is that jitter's mean. ``spirals(std=0.1, jitter=1/12)`` reproduces its
    generator exactly (box noise ``U([-1/12, 1/12]^2)``, density with normal CDFs, hence a slower
    ``log_prob``). The default replaces the box by a Gaussian of the same variance:
    ``std = sqrt(0.1^2 + (1/6)^2/12) ≈ 0.111``.
    """

    def arm(u):
        n = 3.0 * jnp.pi * jnp.sqrt(u)
        return jnp.stack([-n * jnp.cos(n) + 0.25, n * jnp.sin(n) + 0.25], axis=-1) / 3.0

    def other_arm(u):
        return -arm(u)

    # n ∝ sqrt(u) is singular at u = 0: integrate in v = sqrt(u) (u = v^2), where c is smooth.
    return NoisyCurves(
        (arm, other_arm), std, jitter=jitter, num_panels=num_panels, warp=lambda v: v**2
    )
