r"""Mixture toy densities: Gaussian mixtures (:func:`eight_gaussians`,
:func:`twenty_five_gaussians`) and concentric rings (:func:`rings`), all with closed-form
normalized densities.

The Gaussian mixtures are NumPyro's ``MixtureSameFamily`` of a ``Categorical`` and a
``Normal(...).to_event(1)`` (isotropic components), so ``sample`` and ``log_prob`` are NumPyro's.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.special import i0e, logsumexp
from numpyro.distributions import Categorical, Independent, MixtureSameFamily, Normal, constraints

from numpyro_ebm._validation import check_int, check_positive
from numpyro_ebm.datasets.base import (
    LOG_2PI,
    Toy2D,
    check_points,
    check_sample_args,
    normalized_log_weights,
    normalized_weights,
)

__all__ = ["GaussianMixture2D", "Rings", "eight_gaussians", "rings", "twenty_five_gaussians"]


class _IsotropicNormal(Independent):
    """``Normal(locs, std).to_event(1)`` whose support says what it is, ``real_vector``: a
    parameter-free constraint, which numpyro < 0.22's ``MixtureSameFamily`` requires of its
    components (it refuses the generic ``independent(real, 1)``)."""

    @property
    def support(self):
        return constraints.real_vector


class GaussianMixture2D(MixtureSameFamily):
    r"""Mixture of isotropic 2-D Gaussians with a shared standard deviation.

    .. math::

        p(x) = \sum_{k=1}^K w_k\, \mathcal N(x;\ \mu_k,\ \sigma^2 I_2)

    A ``numpyro.distributions.MixtureSameFamily`` of ``Categorical(probs=w)`` and
    ``Normal(locs, std).to_event(1)`` (batch ``(K,)``, event ``(2,)``): ``log_prob`` is the
    log-sum-exp over components, ``sample`` draws a component and then its Gaussian.

    :param locs: centers ``mu``, shape ``(K, 2)``.
    :param float std: ``sigma`` > 0.
    :param weights: optional ``(K,)`` non-negative weights (normalized here); uniform by default.

    Example::

        d = GaussianMixture2D(jnp.array([[-1.0, 0.0], [1.0, 0.0]]), 0.3, weights=(1.0, 3.0))
        x = d.sample(jax.random.key(0), (1000,))   # (1000, 2)
        d.log_prob(x)                              # (1000,)
    """

    def __init__(self, locs, std, weights=None, *, validate_args=None):
        locs = jnp.asarray(locs, dtype=jnp.float32)
        if locs.ndim != 2 or locs.shape[-1] != 2:
            raise ValueError(f"GaussianMixture2D: `locs` must have shape (K, 2); got {locs.shape}.")
        check_positive("std", std)
        probs = normalized_weights(weights, locs.shape[0], "GaussianMixture2D")
        std = jnp.asarray(std, dtype=jnp.float32)
        if std.ndim != 0:
            raise ValueError(f"GaussianMixture2D: `std` must be a scalar; got shape {std.shape}.")
        super().__init__(
            Categorical(probs=probs),
            _IsotropicNormal(Normal(locs, std), 1),
            validate_args=validate_args,
        )

    @property
    def locs(self):
        """``(K, 2)`` component centers."""
        return self.component_distribution.base_dist.loc

    @property
    def std(self):
        """The shared component standard deviation (a scalar)."""
        return self.component_distribution.base_dist.scale[..., 0, 0]

    @property
    def log_weights(self):
        """``(K,)`` normalized log mixture weights (``-inf`` for a zero weight)."""
        return jnp.log(self.mixing_distribution.probs)

    def sample(self, key, sample_shape=()):
        return super().sample(key, check_sample_args(key, sample_shape))

    def log_prob(self, value, intermediates=None):
        return super().log_prob(check_points(value), intermediates)


def eight_gaussians(radius: float = 2.0 * math.sqrt(2.0), std: float = 0.5 / math.sqrt(2.0)):
    r"""Eight Gaussians on a circle (FFJORD ``8gaussians``).

    Centers :math:`\mu_k = r(\cos(k\pi/4), \sin(k\pi/4))`, ``k = 0..7``, equal weights.
    Defaults: ``radius = 2*sqrt(2) ≈ 2.828``, ``std = 0.5/sqrt(2) ≈ 0.354`` (FFJORD draws at radius
    4 with std 0.5 and divides by 1.414). True entropy ≈ 2.831 nats (2.838 if the modes did not
    overlap).

    Example::

        x = eight_gaussians().sample(jax.random.key(0), (10_000,))   # (10000, 2)
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

    Example::

        twenty_five_gaussians().log_prob(jnp.zeros(2))   # the central mode
    """
    g = check_int("grid_size", grid_size, minimum=1)
    check_positive("spacing", spacing)
    ticks = (np.arange(g) - (g - 1) / 2.0) * spacing
    locs = np.stack(np.meshgrid(ticks, ticks, indexing="ij"), axis=-1).reshape(-1, 2)
    return GaussianMixture2D(locs, std)


class Rings(Toy2D):
    r"""Concentric rings: a uniform angle on circles of radii ``r_k``, plus Gaussian noise.

    ``k ~ Cat(w)``, ``theta ~ U(0, 2 pi)``, ``x = r_k (cos theta, sin theta) + sigma eps``. The angular
    integral is closed form (:math:`I_0` the modified Bessel function):

    .. math::

        p(x) = \sum_k w_k \frac{1}{2\pi\sigma^2}
               \exp\!\Big(-\frac{(|x| - r_k)^2}{2\sigma^2}\Big)\,
               e^{-z_k} I_0(z_k), \qquad z_k = \frac{r_k |x|}{\sigma^2},

    evaluated with the scaled Bessel function ``i0e`` (no overflow); :math:`|x|` is
    ``optax.safe_norm`` (gradient 0 at the origin).

    :param radii: ``(K,)`` positive radii. :param float std: noise ``sigma`` > 0.
    :param weights: optional ``(K,)`` ring weights; uniform by default.

    Example::

        Rings((1.0, 2.0), 0.1).log_prob(jnp.array([1.0, 0.0]))
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
        self.log_weights = normalized_log_weights(weights, radii.shape[0], "Rings")
        super().__init__(validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        sample_shape = check_sample_args(key, sample_shape)
        k_comp, k_angle, k_noise = jax.random.split(key, 3)
        comp = jax.random.categorical(k_comp, self.log_weights, shape=sample_shape)
        theta = jax.random.uniform(k_angle, sample_shape, maxval=2.0 * jnp.pi)
        eps = jax.random.normal(k_noise, sample_shape + (2,))
        r = self.radii[comp][..., None]
        return r * jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=-1) + self.std * eps

    def log_prob(self, value):
        x = check_points(value)
        rho = optax.safe_norm(x, 0.0, axis=-1, keepdims=True)  # (..., 1)
        s2 = self.std**2
        z = self.radii * rho / s2
        log_ring = -0.5 * (rho - self.radii) ** 2 / s2 + jnp.log(i0e(z)) - LOG_2PI - jnp.log(s2)
        return logsumexp(self.log_weights + log_ring, axis=-1)


def rings(radii=(0.75, 1.5, 2.25, 3.0), std: float = 0.08, weights=None):
    """Four concentric rings (FFJORD ``rings``): radii ``3 * (0.25, 0.5, 0.75, 1)``, equal
    weights, Gaussian noise std 0.08. FFJORD spaces the angles evenly; here they are uniform.

    Example::

        x = rings().sample(jax.random.key(0), (1000,))   # (1000, 2)
    """
    return Rings(radii, std, weights)
