"""Gradient checks shared by the estimator tests, on ``jax.test_util.check_grads``."""

import jax
import jax.numpy as jnp
from jax.test_util import check_grads


def check_grads_along_each_coordinate(f, z, *, eps=1e-5, rtol=1e-6, atol=1e-8):
    """``jax.test_util.check_grads`` (forward and reverse mode, first order) of ``f`` along every
    coordinate of the flat vector ``z``: each partial derivative is checked against central
    differences with step ``eps`` (``check_grads`` alone checks one random direction)."""
    f = jax.jit(f)
    for i in range(z.size):
        e_i = jnp.zeros_like(z).at[i].set(1.0)
        check_grads(
            lambda t, e_i=e_i: f(z + t * e_i),
            (jnp.zeros((), z.dtype),),
            order=1,
            modes=("fwd", "rev"),
            eps=eps,
            rtol=rtol,
            atol=atol,
        )
