"""Finite-difference gradient checks shared by the estimator tests."""

import jax
import jax.numpy as jnp


def grad_and_central_differences(f, z, h=1e-5):
    """``(jax.grad(f)(z), central differences of f at z with step h)`` for a flat vector ``z``."""

    @jax.jit
    def both(z):
        steps = h * jnp.eye(z.size)
        fd = (jax.vmap(f)(z + steps) - jax.vmap(f)(z - steps)) / (2 * h)
        return jax.grad(f)(z), fd

    return both(z)
