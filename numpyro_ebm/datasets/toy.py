r"""Two-dimensional toy densities of the EBM / flow literature, with exact samplers and exact densities.

Every density is a NumPyro :class:`~numpyro.distributions.Distribution` with ``event_shape (2,)``
and ``batch_shape ()``: ``sample(rng_key, sample_shape)`` draws exactly from the generative
process, and ``log_prob(x)`` (``x`` of shape ``(..., 2)`` -> ``(...)``) is the *normalized* log
density of that same process, so a model's test negative log-likelihood minus :func:`entropy` is
its KL divergence to the data.

The parameters follow the FFJORD toy sets (Grathwohl et al. 2019, ``lib/toy_data.py``) and, for
``twenty_five_gaussians``, WGAN-GP (Gulrajani et al. 2017). Where the usual generator has no
closed-form density, it is written as a latent variable model whose density is exact:

* **closed form**: :func:`eight_gaussians`, :func:`twenty_five_gaussians` (Gaussian mixtures),
  :func:`rings` (a uniform angle on a circle convolved with a Gaussian is a Rice/von Mises
  density with a Bessel function), :func:`pinwheel` (Gaussians pushed through an area-preserving
  swirl, change of variables) and :func:`checkerboard` (uniform squares, optionally convolved
  with a Gaussian: products of normal CDF differences).
* **1-D integral**: :func:`two_moons`, :func:`swiss_roll`, :func:`spirals` are a uniform
  variable ``u`` on ``[0, 1]`` mapped onto a curve ``c(u)``, plus noise:

  .. math::

      p(x) = \sum_k w_k \int_0^1 K(x - c_k(u))\, du,

  with ``K`` an isotropic Gaussian (optionally a uniform box convolved with a Gaussian).
  The integral is evaluated by fixed composite Gauss-Legendre quadrature (``num_panels`` panels
  of 8 nodes each) and a log-sum-exp; the defaults keep the quadrature error of ``log_prob``
  below ``1e-4`` nats wherever the density is above ``1e-6`` of its maximum (checked in the
  tests against 4x the nodes).

See ``docs/datasets.md`` for the formulas. :data:`TOY_DENSITIES` maps names to constructors.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import i0e, log_ndtr, logsumexp
from numpyro.distributions import constraints
from numpyro.distributions.distribution import Distribution

from numpyro_ebm._validation import check_int, check_positive

__all__ = [
    "Checkerboard",
    "GaussianMixture2D",
    "NoisyCurves",
    "Pinwheel",
    "Rings",
    "TOY_DENSITIES",
    "checkerboard",
    "eight_gaussians",
    "entropy",
    "pinwheel",
    "rings",
    "spirals",
    "swiss_roll",
    "twenty_five_gaussians",
    "two_moons",
]

_LOG_2PI = math.log(2.0 * math.pi)
_GL_ORDER = 8  # Gauss-Legendre nodes per panel
_POINTS_PER_BLOCK = 16_384  # NoisyCurves.log_prob evaluates larger batches block by block


# --------------------------------------------------------------------------------------------
# small numerics
# --------------------------------------------------------------------------------------------
def _log1mexp(z):
    """``log(1 - exp(z))`` for ``z < 0``, stable at both ends (Maechler 2012)."""
    return jnp.where(z > -math.log(2.0), jnp.log(-jnp.expm1(z)), jnp.log1p(-jnp.exp(z)))


def _log_interval_mass(a, b):
    r"""``log(Phi(b) - Phi(a))`` for ``a < b`` (standard normal CDF), stable in both tails.

    Uses :math:`\Phi(b) - \Phi(a) = \Phi(-a) - \Phi(-b)` to stay in the lower tail, where
    ``log_ndtr`` is accurate.
    """
    upper = (a + b) > 0
    lo = jnp.where(upper, -b, a)
    hi = jnp.where(upper, -a, b)
    log_hi = log_ndtr(hi)
    return log_hi + _log1mexp(log_ndtr(lo) - log_hi)


def _safe_norm(x):
    """Euclidean norm over the last axis with a finite (zero) gradient at the origin."""
    sq = jnp.sum(x**2, axis=-1)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def _rotate(v, angle):
    """Rotate 2-D vectors ``v (..., 2)`` counter-clockwise by ``angle (...)``."""
    c, s = jnp.cos(angle), jnp.sin(angle)
    return jnp.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1]], axis=-1)


def _check_x(x):
    if jnp.shape(x)[-1:] != (2,):
        raise ValueError(
            f"log_prob: `x` must have shape (..., 2) (2-D points); got shape {jnp.shape(x)}."
        )
    return jnp.asarray(x)


def _log_weights(weights, num, name):
    if weights is None:
        return jnp.full((num,), -math.log(num))
    w = np.asarray(weights, dtype=float)
    if w.shape != (num,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(
            f"{name}: `weights` must be {num} finite non-negative numbers with a positive sum; "
            f"got {weights!r}."
        )
    return jnp.asarray(np.log(w / w.sum()), dtype=jnp.float32)


class _Toy2D(Distribution):
    """Shared frame: event shape ``(2,)``, empty batch shape, real support."""

    arg_constraints = {}
    support = constraints.real_vector

    def __init__(self, validate_args=None):
        super().__init__(batch_shape=(), event_shape=(2,), validate_args=validate_args)


# --------------------------------------------------------------------------------------------
# Gaussian mixtures
# --------------------------------------------------------------------------------------------
class GaussianMixture2D(_Toy2D):
    r"""Mixture of isotropic 2-D Gaussians with a shared standard deviation.

    .. math::

        p(x) = \sum_{k=1}^K w_k\, \mathcal N(x;\ \mu_k,\ \sigma^2 I_2)

    :param locs: centers ``mu``, shape ``(K, 2)``.
    :param float std: ``sigma`` > 0.
    :param weights: optional ``(K,)`` non-negative weights (normalized here); uniform by default.
    """

    pytree_data_fields = ("locs", "std", "log_weights")

    def __init__(self, locs, std, weights=None, *, validate_args=None):
        locs = jnp.asarray(locs, dtype=jnp.float32)
        if locs.ndim != 2 or locs.shape[-1] != 2:
            raise ValueError(f"GaussianMixture2D: `locs` must have shape (K, 2); got {locs.shape}.")
        check_positive("std", std)
        self.locs = locs
        self.std = jnp.asarray(std, dtype=jnp.float32)
        self.log_weights = _log_weights(weights, locs.shape[0], "GaussianMixture2D")
        super().__init__(validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        k_comp, k_noise = jax.random.split(key)
        comp = jax.random.categorical(k_comp, self.log_weights, shape=sample_shape)
        eps = jax.random.normal(k_noise, tuple(sample_shape) + (2,))
        return self.locs[comp] + self.std * eps

    def log_prob(self, value):
        x = _check_x(value)
        d2 = jnp.sum((x[..., None, :] - self.locs) ** 2, axis=-1)  # (..., K)
        log_n = -0.5 * d2 / self.std**2 - _LOG_2PI - 2.0 * jnp.log(self.std)
        return logsumexp(self.log_weights + log_n, axis=-1)

    @property
    def mean(self):
        return jnp.sum(jnp.exp(self.log_weights)[:, None] * self.locs, axis=0)


def eight_gaussians(radius: float = 2.0 * math.sqrt(2.0), std: float = 0.5 / math.sqrt(2.0)):
    r"""Eight Gaussians on a circle (FFJORD ``8gaussians``).

    Centers :math:`\mu_k = r(\cos(k\pi/4), \sin(k\pi/4))`, ``k = 0..7``, equal weights.
    Defaults: ``radius = 2*sqrt(2) ≈ 2.828``, ``std = 0.5/sqrt(2) ≈ 0.354`` (FFJORD draws at radius
    4 with std 0.5 and divides by 1.414). True entropy ≈ 2.831 nats (2.838 if the modes did not
    overlap).
    """
    check_positive("radius", radius)
    angles = np.arange(8) * (np.pi / 4.0)
    locs = radius * np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    return GaussianMixture2D(locs, std)


def twenty_five_gaussians(
    grid_size: int = 5,
    spacing: float = 1.0 / math.sqrt(2.0),
    std: float = 0.05 / (2.0 * math.sqrt(2.0)),
):
    r"""A ``grid_size x grid_size`` grid of Gaussians (WGAN-GP ``25gaussians``).

    Centers :math:`\text{spacing}\cdot(i, j)` for ``i, j`` in ``-(g-1)/2 .. (g-1)/2``, equal
    weights. Defaults follow Gulrajani et al. (2017): centers ``2*{-2..2}``, std 0.05, all divided
    by 2.828, i.e. ``spacing = 1/sqrt(2) ≈ 0.707``, ``std = 0.05/(2 sqrt 2) ≈ 0.0177`` (very
    sharp modes: a hard test for samplers).
    """
    g = check_int("grid_size", grid_size, minimum=1)
    check_positive("spacing", spacing)
    ticks = (np.arange(g) - (g - 1) / 2.0) * spacing
    locs = np.stack(np.meshgrid(ticks, ticks, indexing="ij"), axis=-1).reshape(-1, 2)
    return GaussianMixture2D(locs, std)


# --------------------------------------------------------------------------------------------
# rings: closed form with a Bessel function
# --------------------------------------------------------------------------------------------
class Rings(_Toy2D):
    r"""Concentric rings: a uniform angle on circles of radii ``r_k``, plus Gaussian noise.

    ``k ~ Cat(w)``, ``theta ~ U(0, 2 pi)``, ``x = r_k (cos theta, sin theta) + sigma eps``. The angular
    integral is closed form (:math:`I_0` the modified Bessel function):

    .. math::

        p(x) = \sum_k w_k \frac{1}{2\pi\sigma^2}
               \exp\!\Big(-\frac{(|x| - r_k)^2}{2\sigma^2}\Big)\,
               e^{-z_k} I_0(z_k), \qquad z_k = \frac{r_k |x|}{\sigma^2},

    evaluated with the scaled Bessel function ``i0e`` (no overflow).

    :param radii: ``(K,)`` positive radii. :param float std: noise ``sigma`` > 0.
    :param weights: optional ``(K,)`` ring weights; uniform by default.
    """

    pytree_data_fields = ("radii", "std", "log_weights")

    def __init__(self, radii, std, weights=None, *, validate_args=None):
        radii = jnp.asarray(radii, dtype=jnp.float32)
        if radii.ndim != 1 or radii.shape[0] < 1:
            raise ValueError(
                f"Rings: `radii` must be a 1-D array of radii; got shape {radii.shape}."
            )
        check_positive("radii", radii)
        check_positive("std", std)
        self.radii = radii
        self.std = jnp.asarray(std, dtype=jnp.float32)
        self.log_weights = _log_weights(weights, radii.shape[0], "Rings")
        super().__init__(validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        k_comp, k_angle, k_noise = jax.random.split(key, 3)
        comp = jax.random.categorical(k_comp, self.log_weights, shape=sample_shape)
        theta = jax.random.uniform(k_angle, sample_shape, maxval=2.0 * jnp.pi)
        eps = jax.random.normal(k_noise, tuple(sample_shape) + (2,))
        r = self.radii[comp][..., None]
        return r * jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=-1) + self.std * eps

    def log_prob(self, value):
        x = _check_x(value)
        rho = _safe_norm(x)[..., None]  # (..., 1)
        s2 = self.std**2
        z = self.radii * rho / s2
        log_ring = -0.5 * (rho - self.radii) ** 2 / s2 + jnp.log(i0e(z)) - _LOG_2PI - jnp.log(s2)
        return logsumexp(self.log_weights + log_ring, axis=-1)


def rings(radii=(0.75, 1.5, 2.25, 3.0), std: float = 0.08, weights=None):
    """Four concentric rings (FFJORD ``rings``): radii ``3 * (0.25, 0.5, 0.75, 1)``, equal
    weights, Gaussian noise std 0.08. FFJORD spaces the angles evenly; here they are uniform."""
    return Rings(radii, std, weights)


# --------------------------------------------------------------------------------------------
# curves plus noise: exact up to a 1-D Gauss-Legendre quadrature
# --------------------------------------------------------------------------------------------
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


class NoisyCurves(_Toy2D):
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
        self.log_weights = _log_weights(weights, len(curves), "NoisyCurves")
        with jax.ensure_compile_time_eval():
            v, wq = _gauss_legendre_nodes(edges)
            v = jnp.asarray(v, dtype=jnp.float32)
            u = warp(v)
            log_wq = jnp.log(jnp.asarray(wq, dtype=jnp.float32) * jax.vmap(jax.grad(warp))(v))
            self.nodes = jnp.concatenate([c(u) for c in curves], axis=0)  # (K * J, 2)
            self.node_log_weights = (self.log_weights[:, None] + log_wq).reshape(-1)
        super().__init__(validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        k_comp, k_u, k_box, k_noise = jax.random.split(key, 4)
        shape = tuple(sample_shape)
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
            return -0.5 * jnp.sum(y**2, axis=-1) / s**2 - _LOG_2PI - 2.0 * jnp.log(s)
        a = self.jitter
        ay = jnp.abs(y)  # the kernel is even in each coordinate
        log_mass = _log_interval_mass((-a - ay) / s, (a - ay) / s)
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
        x = _check_x(value)
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
    generator exactly (box noise ``U([-1/12, 1/12]^2)``, density with normal CDFs), but the
    special functions make ``log_prob`` about 30x slower. The default replaces the box by a
    Gaussian of the same variance: ``std = sqrt(0.1^2 + (1/6)^2/12) ≈ 0.111``.
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


# --------------------------------------------------------------------------------------------
# pinwheel: change of variables through an area-preserving swirl
# --------------------------------------------------------------------------------------------
class Pinwheel(_Toy2D):
    r"""Pinwheel: rotated, swirled Gaussians (FFJORD ``pinwheel``, with an invertible swirl).

    ``k ~ U{0..K-1}``, ``f ~ N((m, 0), diag(s_r^2, s_t^2))``,

    .. math::

        x = \lambda\, R\!\big(-\tfrac{2\pi k}{K} - \rho\, e^{|f|}\big) f,

    with :math:`R(\alpha)` the rotation by :math:`\alpha`. A rotation by an angle that depends
    only on the radius :math:`|f|` is an area-preserving bijection of the plane (in polar
    coordinates ``(r, a) -> (r, a - g(r))``, unit Jacobian), and :math:`|x| = \lambda |f|`, so

    .. math::

        p(x) = \frac{1}{K\lambda^2} \sum_k
               \mathcal N\!\Big(R\big(\tfrac{2\pi k}{K} + \rho\, e^{|x|/\lambda}\big)
               \tfrac{x}{\lambda};\ (m, 0),\ \mathrm{diag}(s_r^2, s_t^2)\Big).

    FFJORD twists by :math:`\rho e^{f_1}` (the radial coordinate) instead of
    :math:`\rho e^{|f|}`; the two differ by :math:`f_2^2/(2 f_1) \approx 0.005` on average, and
    only the second gives a bijection (hence an exact density).
    """

    pytree_data_fields = ("radial_std", "tangential_std", "rate", "scale", "radial_mean")
    pytree_aux_fields = ("num_arms",)

    def __init__(
        self,
        num_arms=5,
        radial_std=0.3,
        tangential_std=0.1,
        rate=0.25,
        scale=2.0,
        radial_mean=1.0,
        *,
        validate_args=None,
    ):
        self.num_arms = check_int("num_arms", num_arms, minimum=1)
        for name, v in (("radial_std", radial_std), ("tangential_std", tangential_std)):
            check_positive(name, v)
        check_positive("scale", scale)
        self.radial_std = jnp.asarray(radial_std, dtype=jnp.float32)
        self.tangential_std = jnp.asarray(tangential_std, dtype=jnp.float32)
        self.rate = jnp.asarray(rate, dtype=jnp.float32)
        self.scale = jnp.asarray(scale, dtype=jnp.float32)
        self.radial_mean = jnp.asarray(radial_mean, dtype=jnp.float32)
        super().__init__(validate_args=validate_args)

    def _arm_angles(self):
        return jnp.arange(self.num_arms, dtype=jnp.float32) * (2.0 * jnp.pi / self.num_arms)

    def sample(self, key, sample_shape=()):
        k_arm, k_f = jax.random.split(key)
        shape = tuple(sample_shape)
        arm = jax.random.randint(k_arm, shape, 0, self.num_arms)
        z = jax.random.normal(k_f, shape + (2,))
        f = jnp.stack(
            [self.radial_mean + self.radial_std * z[..., 0], self.tangential_std * z[..., 1]], -1
        )
        angle = self._arm_angles()[arm] + self.rate * jnp.exp(_safe_norm(f))
        return self.scale * _rotate(f, -angle)

    def log_prob(self, value):
        x = _check_x(value)
        y = x / self.scale
        angle = self._arm_angles() + (self.rate * jnp.exp(_safe_norm(y)))[..., None]  # (..., K)
        f = _rotate(y[..., None, :], angle)  # (..., K, 2)
        za = (f[..., 0] - self.radial_mean) / self.radial_std
        zb = f[..., 1] / self.tangential_std
        log_n = (
            -0.5 * (za**2 + zb**2)
            - _LOG_2PI
            - jnp.log(self.radial_std)
            - jnp.log(self.tangential_std)
        )
        return logsumexp(log_n, axis=-1) - math.log(self.num_arms) - 2.0 * jnp.log(self.scale)


def pinwheel(
    num_arms: int = 5,
    radial_std: float = 0.3,
    tangential_std: float = 0.1,
    rate: float = 0.25,
    scale: float = 2.0,
):
    """Pinwheel with FFJORD's parameters (5 arms, radial std 0.3, tangential std 0.1, rate 0.25,
    radial mean 1, scale 2); see :class:`Pinwheel` for the (invertible) swirl."""
    return Pinwheel(num_arms, radial_std, tangential_std, rate, scale)


# --------------------------------------------------------------------------------------------
# checkerboard
# --------------------------------------------------------------------------------------------
class _CheckerboardSupport(constraints.Constraint):
    """The black squares of the checkerboard, as a NumPyro constraint (event_dim 1)."""

    event_dim = 1

    def __init__(self, num_cells, cell_size):
        self.num_cells = num_cells
        self.cell_size = cell_size

    def __call__(self, x):
        idx = jnp.floor((x + 0.5 * self.num_cells * self.cell_size) / self.cell_size)
        inside = jnp.all((idx >= 0) & (idx < self.num_cells), axis=-1)
        return inside & (jnp.mod(jnp.sum(idx, axis=-1), 2) == 0)

    def feasible_like(self, prototype):
        corner = -0.5 * self.num_cells * self.cell_size + 0.5 * self.cell_size
        return jnp.full(jnp.shape(prototype), corner, dtype=jnp.result_type(prototype))

    def tree_flatten(self):
        return (), ((), {"num_cells": self.num_cells, "cell_size": self.cell_size})

    def __eq__(self, other):
        return (
            isinstance(other, _CheckerboardSupport)
            and other.num_cells == self.num_cells
            and other.cell_size == self.cell_size
        )

    def __hash__(self):
        return hash((type(self), self.num_cells, self.cell_size))


class Checkerboard(_Toy2D):
    r"""Uniform density on the black squares of a ``n x n`` checkerboard, optionally smoothed.

    Cells ``[l + i c, l + (i+1) c) x [l + j c, l + (j+1) c)``, ``l = -n c / 2``; black when
    ``i + j`` is even (``B = ceil(n^2 / 2)`` of them). With ``noise = 0``:

    .. math::

        p(x) = \frac{1}{B c^2}\ \text{on black cells}, \qquad \log p(x) = -\infty\ \text{elsewhere}

    (the support is the constraint ``support``; gradients of ``log_prob`` are zero). With
    ``noise = sigma > 0`` the uniform draw is convolved with :math:`\mathcal N(0, \sigma^2 I)`,
    which is closed form and smooth everywhere:

    .. math::

        p(x) = \frac{1}{B c^2} \sum_{(i, j)\ \text{black}}
            \prod_{d} \big[\Phi(\tfrac{h_d - x_d}{\sigma}) - \Phi(\tfrac{l_d - x_d}{\sigma})\big]

    (``l_d, h_d`` the cell's edges). Use ``noise > 0`` for gradient-based training (score matching,
    Langevin), where a density with flat pieces and jumps gives no signal.
    """

    pytree_aux_fields = ("num_cells", "cell_size", "noise")

    def __init__(self, num_cells=4, cell_size=2.0, noise=0.0, *, validate_args=None):
        self.num_cells = check_int("num_cells", num_cells, minimum=1)
        check_positive("cell_size", cell_size)
        if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
            raise ValueError(f"Checkerboard: `noise` must be a float >= 0; got {noise!r}.")
        self.cell_size = float(cell_size)
        self.noise = float(noise)
        super().__init__(validate_args=validate_args)

    @property
    def support(self):
        if self.noise > 0:
            return constraints.real_vector
        return _CheckerboardSupport(self.num_cells, self.cell_size)

    @property
    def num_black(self):
        return (self.num_cells * self.num_cells + 1) // 2

    def _black_cells(self):
        n = self.num_cells
        ij = np.array([(i, j) for i in range(n) for j in range(n) if (i + j) % 2 == 0])
        return jnp.asarray(ij, dtype=jnp.int32)

    def sample(self, key, sample_shape=()):
        k_cell, k_u, k_noise = jax.random.split(key, 3)
        shape = tuple(sample_shape)
        cells = self._black_cells()
        cell = cells[jax.random.randint(k_cell, shape, 0, cells.shape[0])]  # (..., 2)
        low = -0.5 * self.num_cells * self.cell_size + cell * self.cell_size
        x = low + self.cell_size * jax.random.uniform(k_u, shape + (2,))
        x = jnp.minimum(x, jnp.nextafter(low + self.cell_size, low))  # stay in the half-open cell
        if self.noise > 0:
            x = x + self.noise * jax.random.normal(k_noise, shape + (2,))
        return x

    def log_prob(self, value):
        x = _check_x(value)
        log_area = math.log(self.num_black * self.cell_size**2)
        if self.noise == 0.0:
            return jnp.where(self.support(x), -log_area, -jnp.inf)
        edges = -0.5 * self.num_cells * self.cell_size + self.cell_size * jnp.arange(
            self.num_cells + 1, dtype=jnp.float32
        )
        z = (edges - x[..., None]) / self.noise  # (..., 2, n + 1)
        log_mass = _log_interval_mass(z[..., :-1], z[..., 1:])  # (..., 2, n)
        cells = self._black_cells()
        terms = log_mass[..., 0, cells[:, 0]] + log_mass[..., 1, cells[:, 1]]  # (..., B)
        return logsumexp(terms, axis=-1) - log_area


def checkerboard(num_cells: int = 4, cell_size: float = 2.0, noise: float = 0.0):
    """Checkerboard (FFJORD ``checkerboard``): 8 black squares of side 2 in ``[-4, 4]^2``, uniform
    on them (``log_prob = -log 32`` there, ``-inf`` elsewhere). ``noise > 0`` convolves it with a
    Gaussian of that std (closed form, smooth); see :class:`Checkerboard`."""
    return Checkerboard(num_cells, cell_size, noise)


# --------------------------------------------------------------------------------------------
# entropy
# --------------------------------------------------------------------------------------------
def entropy(
    dist: Distribution,
    rng_key,
    num_samples: int = 100_000,
    batch_size: int = 10_000,
):
    r"""Monte Carlo entropy :math:`H(p) = -\mathbb E_p[\log p(x)]` with its standard error.

    .. math::

        \hat H = -\frac1N \sum_{n=1}^N \log p(x_n),\quad x_n \sim p, \qquad
        \mathrm{se} = \frac{\mathrm{sd}(\log p(x_n))}{\sqrt N}

    A model's expected test NLL minus ``H`` is its KL divergence from ``p`` (>= 0).

    :param dist: any distribution with exact ``sample`` and normalized ``log_prob``.
    :param rng_key: a JAX PRNG key.
    :param int num_samples: ``N``.
    :param int batch_size: ``log_prob`` is evaluated on ``batch_size`` points at a time.
    :return: ``(estimate, standard_error)``, two scalar arrays (nats).
    """
    n = check_int("num_samples", num_samples, minimum=2)
    b = min(check_int("batch_size", batch_size, minimum=1), n)
    num_batches = -(-n // b)
    x = dist.sample(rng_key, (num_batches * b,)).reshape((num_batches, b) + dist.event_shape)
    log_p = lax.map(dist.log_prob, x).reshape(-1)[:n]
    return -jnp.mean(log_p), jnp.std(log_p, ddof=1) / math.sqrt(n)


#: Name -> constructor of every toy density (call it with no arguments for the defaults).
TOY_DENSITIES: dict[str, Callable[..., Distribution]] = {
    "eight_gaussians": eight_gaussians,
    "twenty_five_gaussians": twenty_five_gaussians,
    "two_moons": two_moons,
    "rings": rings,
    "checkerboard": checkerboard,
    "swiss_roll": swiss_roll,
    "pinwheel": pinwheel,
    "spirals": spirals,
}
