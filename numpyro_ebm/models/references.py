r"""Exact results for the 2-D Ising model on the infinite square lattice (zero field), to check
samplers against: the critical point, Yang's spontaneous magnetization and Onsager's internal
energy. In the physical parametrization: coupling :math:`J`, inverse temperature :math:`\beta`
(an :class:`~numpyro_ebm.models.Ising` with ``params = ising.init_params(beta=beta,
coupling=J)``).

**Example**

.. code-block:: python

    critical_beta                      # 0.4407 = ½ ln(1 + √2)
    onsager_magnetization(0.5)         # 0.9113
    onsager_energy_per_site(0.5)       # -1.7456
"""

from __future__ import annotations

import math

import jax.numpy as jnp

__all__ = ["critical_beta", "onsager_energy_per_site", "onsager_magnetization"]

critical_beta = 0.5 * math.log(1.0 + math.sqrt(2.0))
"""Critical inverse temperature of the 2-D square lattice with J = 1: ½ ln(1 + √2) ≈ 0.4407."""


def _ellipk(k):
    """Complete elliptic integral of the first kind K(k) (modulus k), by the AGM: K = π / (2 AGM)."""
    a, b = jnp.ones_like(k), jnp.sqrt(jnp.clip(1.0 - k * k, 0.0, None))
    for _ in range(12):  # quadratic convergence: 12 steps reach float64 precision for k < 1
        a, b = 0.5 * (a + b), jnp.sqrt(a * b)
    return jnp.pi / (2.0 * a)


def onsager_magnetization(beta, coupling=1.0):
    r"""Spontaneous magnetization per spin of the infinite 2-D square lattice (Yang 1952).

    :math:`M(\beta) = (1 - \sinh(2\beta J)^{-4})^{1/8}` for :math:`\beta > \beta_c`, else 0.
    Works on arrays; jittable.
    """
    beta = jnp.asarray(beta, jnp.result_type(float))
    x = 1.0 - jnp.sinh(2.0 * beta * coupling) ** -4
    return jnp.where(x > 0, jnp.power(jnp.clip(x, 0.0, None), 0.125), 0.0)


def onsager_energy_per_site(beta, coupling=1.0):
    r"""Internal energy per site of the infinite 2-D square lattice, zero field (Onsager 1944).

    .. math::

        u(\beta) = -J \coth(2\beta J)\Big[1 + \tfrac{2}{\pi}\,(2\tanh^2(2\beta J) - 1)\,K(\kappa)
        \Big],\qquad \kappa = \frac{2\sinh(2\beta J)}{\cosh^2(2\beta J)},

    :math:`K` the complete elliptic integral of the first kind (computed by the arithmetic-geometric
    mean). At :math:`\beta_c` the bracket is finite (:math:`u = -\sqrt2 J`); the logarithmic
    singularity of :math:`K` is cancelled by the vanishing prefactor. Jittable.
    """
    beta = jnp.asarray(beta, jnp.result_type(float))
    t = 2.0 * beta * coupling
    kappa = jnp.clip(2.0 * jnp.sinh(t) / jnp.cosh(t) ** 2, 0.0, 1.0)
    factor = 2.0 * jnp.tanh(t) ** 2 - 1.0
    at_critical = jnp.abs(factor) < 1e-6
    correction = jnp.where(at_critical, 0.0, factor * _ellipk(jnp.where(at_critical, 0.5, kappa)))
    return -coupling / jnp.tanh(t) * (1.0 + 2.0 / jnp.pi * correction)
