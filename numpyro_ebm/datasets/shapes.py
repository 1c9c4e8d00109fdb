r"""Shapes with closed-form densities: the swirled Gaussians of :func:`pinwheel` (a change of
variables through an area-preserving map) and the uniform squares of :func:`checkerboard`
(optionally smoothed by a Gaussian: products of normal CDF differences).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.special import logsumexp
from numpyro.distributions import constraints

from numpyro_ebm._validation import check_int, check_positive
from numpyro_ebm.datasets.base import (
    LOG_2PI,
    Toy2D,
    check_points,
    check_sample_args,
    log_interval_mass,
)

__all__ = ["Checkerboard", "Pinwheel", "checkerboard", "pinwheel"]


def _radius(v):
    """``|v|`` over the last axis (``optax.safe_norm``: gradient 0, not NaN, at the origin)."""
    return optax.safe_norm(v, 0.0, axis=-1)


def _rotate(v, angle):
    """Rotate 2-D vectors ``v (..., 2)`` counter-clockwise by ``angle (...)``."""
    c, s = jnp.cos(angle), jnp.sin(angle)
    return jnp.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1]], axis=-1)



class Pinwheel(Toy2D):
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
        shape = check_sample_args(key, sample_shape)
        k_arm, k_f = jax.random.split(key)
        arm = jax.random.randint(k_arm, shape, 0, self.num_arms)
        z = jax.random.normal(k_f, shape + (2,))
        f = jnp.stack(
            [self.radial_mean + self.radial_std * z[..., 0], self.tangential_std * z[..., 1]], -1
        )
        angle = self._arm_angles()[arm] + self.rate * jnp.exp(_radius(f))
        return self.scale * _rotate(f, -angle)

    def log_prob(self, value):
        x = check_points(value)
        y = x / self.scale
        angle = self._arm_angles() + (self.rate * jnp.exp(_radius(y)))[..., None]  # (..., K)
        f = _rotate(y[..., None, :], angle)  # (..., K, 2)
        za = (f[..., 0] - self.radial_mean) / self.radial_std
        zb = f[..., 1] / self.tangential_std
        log_n = (
            -0.5 * (za**2 + zb**2)
            - LOG_2PI
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


class Checkerboard(Toy2D):
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
        shape = check_sample_args(key, sample_shape)
        k_cell, k_u, k_noise = jax.random.split(key, 3)
        cells = self._black_cells()
        cell = cells[jax.random.randint(k_cell, shape, 0, cells.shape[0])]  # (..., 2)
        low = -0.5 * self.num_cells * self.cell_size + cell * self.cell_size
        x = low + self.cell_size * jax.random.uniform(k_u, shape + (2,))
        x = jnp.minimum(x, jnp.nextafter(low + self.cell_size, low))  # stay in the half-open cell
        if self.noise > 0:
            x = x + self.noise * jax.random.normal(k_noise, shape + (2,))
        return x

    def log_prob(self, value):
        x = check_points(value)
        log_area = math.log(self.num_black * self.cell_size**2)
        if self.noise == 0.0:
            return jnp.where(self.support(x), -log_area, -jnp.inf)
        edges = -0.5 * self.num_cells * self.cell_size + self.cell_size * jnp.arange(
            self.num_cells + 1, dtype=jnp.float32
        )
        z = (edges - x[..., None]) / self.noise  # (..., 2, n + 1)
        log_mass = log_interval_mass(z[..., :-1], z[..., 1:])  # (..., 2, n)
        cells = self._black_cells()
        terms = log_mass[..., 0, cells[:, 0]] + log_mass[..., 1, cells[:, 1]]  # (..., B)
        return logsumexp(terms, axis=-1) - log_area


def checkerboard(num_cells: int = 4, cell_size: float = 2.0, noise: float = 0.0):
    """Checkerboard (FFJORD ``checkerboard``): 8 black squares of side 2 in ``[-4, 4]^2``, uniform
    on them (``log_prob = -log 32`` there, ``-inf`` elsewhere). ``noise > 0`` convolves it with a
    Gaussian of that std (closed form, smooth); see :class:`Checkerboard`."""
    return Checkerboard(num_cells, cell_size, noise)
