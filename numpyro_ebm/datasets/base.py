r"""The frame shared by the 2-D toy densities: a base class, argument checks, small numerics.

Every toy density has ``event_shape (2,)``, ``batch_shape ()`` and real support (the noiseless
checkerboard narrows it); ``sample`` checks its key and sample shape with
:func:`check_sample_args`, ``log_prob`` its points with :func:`check_points`.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr
from numpyro.distributions import constraints
from numpyro.distributions.distribution import Distribution
from numpyro.distributions.util import log1mexp
from numpyro.util import is_prng_key

__all__ = [
    "LOG_2PI",
    "Toy2D",
    "check_points",
    "check_sample_args",
    "log_interval_mass",
    "normalized_log_weights",
    "normalized_weights",
]

#: :math:`\log 2\pi`.
LOG_2PI = math.log(2.0 * math.pi)


def check_sample_args(key, sample_shape) -> tuple:
    """Check the arguments of ``sample(key, sample_shape)``; return ``sample_shape`` as a tuple.

    ``key`` must be a JAX PRNG key (``jax.random.key(0)`` or ``jax.random.PRNGKey(0)``), never an
    integer seed; ``sample_shape`` a tuple of non-negative ints.
    """
    if not is_prng_key(key):
        raise TypeError(
            "sample: `key` must be a JAX PRNG key (e.g. `jax.random.key(0)`), not an integer "
            f"seed; got {key!r}."
        )
    if isinstance(sample_shape, (tuple, list)) and all(
        isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in sample_shape
    ):
        if any(n < 0 for n in sample_shape):
            raise ValueError(
                f"sample: `sample_shape` must hold non-negative ints; got {tuple(sample_shape)!r}."
            )
        return tuple(int(n) for n in sample_shape)
    raise TypeError(
        f"sample: `sample_shape` must be a tuple of non-negative ints, e.g. (1000,); got "
        f"{sample_shape!r}."
    )


def check_points(x):
    """``x`` as an array of 2-D points ``(..., 2)``, or a ``ValueError`` naming ``x``."""
    if jnp.shape(x)[-1:] != (2,):
        raise ValueError(
            f"log_prob: `x` must have shape (..., 2) (2-D points); got shape {jnp.shape(x)}."
        )
    return jnp.asarray(x)


def normalized_weights(weights, num: int, name: str):
    """``(num,)`` mixture weights ``w / sum(w)`` (uniform for ``None``), float32, checked."""
    if weights is None:
        return jnp.full((num,), 1.0 / num, dtype=jnp.float32)
    w = np.asarray(weights, dtype=float)
    if w.shape != (num,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(
            f"{name}: `weights` must be {num} finite non-negative numbers with a positive sum; "
            f"got {weights!r}."
        )
    return jnp.asarray(w / w.sum(), dtype=jnp.float32)


def normalized_log_weights(weights, num: int, name: str):
    """``(num,)`` log mixture weights: uniform for ``None``, else ``log(w / sum(w))`` (checked;
    ``-inf`` for a zero weight)."""
    if weights is None:
        return jnp.full((num,), -math.log(num))
    w = np.asarray(normalized_weights(weights, num, name), dtype=float)
    with np.errstate(divide="ignore"):
        return jnp.asarray(np.log(w), dtype=jnp.float32)


def log_interval_mass(a, b):
    r"""``log(Phi(b) - Phi(a))`` for ``a < b`` (standard normal CDF), stable in both tails.

    Uses :math:`\Phi(b) - \Phi(a) = \Phi(-a) - \Phi(-b)` to stay in the lower tail, where
    ``log_ndtr`` is accurate, and NumPyro's ``log1mexp`` for :math:`\log(1 - e^{z})`.
    """
    upper = (a + b) > 0
    lo = jnp.where(upper, -b, a)
    hi = jnp.where(upper, -a, b)
    log_hi = log_ndtr(hi)
    return log_hi + log1mexp(log_ndtr(lo) - log_hi)


class Toy2D(Distribution):
    """Shared frame: event shape ``(2,)``, empty batch shape, real support."""

    arg_constraints = {}
    support = constraints.real_vector

    def __init__(self, validate_args=None):
        super().__init__(batch_shape=(), event_shape=(2,), validate_args=validate_args)
