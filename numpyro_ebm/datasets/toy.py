r"""Two-dimensional toy densities of the EBM / flow literature, with exact samplers and exact densities.

Every density is a NumPyro :class:`~numpyro.distributions.Distribution` with ``event_shape (2,)``
and ``batch_shape ()``: ``sample(key, sample_shape)`` (a JAX PRNG key, never an integer seed)
draws exactly from the generative process, and ``log_prob(x)`` (``x`` of shape ``(..., 2)`` ->
``(...)``) is the *normalized* log density of that same process, so a model's test negative
log-likelihood minus :func:`entropy` is its KL divergence to the data.

The parameters follow the FFJORD toy sets (Grathwohl et al. 2019, ``lib/toy_data.py``) and, for
``twenty_five_gaussians``, WGAN-GP (Gulrajani et al. 2017). Where the usual generator has no
closed-form density, it is written as a latent variable model whose density is exact. By family:

* :mod:`numpyro_ebm.datasets.mixtures`, closed form: :func:`eight_gaussians`,
  :func:`twenty_five_gaussians` (NumPyro ``MixtureSameFamily`` of Gaussians) and :func:`rings`
  (a uniform angle on a circle convolved with a Gaussian: a Bessel function).
* :mod:`numpyro_ebm.datasets.shapes`, closed form: :func:`pinwheel` (Gaussians pushed through an
  area-preserving swirl, change of variables) and :func:`checkerboard` (uniform squares,
  optionally convolved with a Gaussian: products of normal CDF differences).
* :mod:`numpyro_ebm.datasets.curves`, a 1-D integral: :func:`two_moons`, :func:`swiss_roll`,
  :func:`spirals`, a uniform variable on a curve plus noise, integrated by fixed Gauss-Legendre
  quadrature.

This module holds the registry :data:`TOY_DENSITIES` (name -> constructor) and :func:`entropy`.
See ``docs/datasets.md`` for the formulas.

Example::

    from numpyro_ebm import datasets

    dist = datasets.TOY_DENSITIES["two_moons"]()
    x = dist.sample(jax.random.key(0), (10_000,))              # (10000, 2)
    H, se = datasets.entropy(dist, jax.random.key(1))            # nats
"""

from __future__ import annotations

import math
from collections.abc import Callable

from jax import lax
from numpyro.distributions.distribution import Distribution
from numpyro.util import is_prng_key

from numpyro_ebm._validation import check_int
from numpyro_ebm.datasets.curves import spirals, swiss_roll, two_moons
from numpyro_ebm.datasets.mixtures import (
    eight_gaussians,
    rings,
    twenty_five_gaussians,
)
from numpyro_ebm.datasets.shapes import checkerboard, pinwheel

__all__ = ["TOY_DENSITIES", "entropy"]


def entropy(
    dist: Distribution,
    rng_key,
    num_samples: int = 100_000,
    chunk_size: int = 10_000,
):
    r"""Monte Carlo entropy :math:`H(p) = -\mathbb E_p[\log p(x)]` with its standard error.

    .. math::

        \hat H = -\frac1N \sum_{n=1}^N \log p(x_n),\quad x_n \sim p, \qquad
        \mathrm{se} = \frac{\mathrm{sd}(\log p(x_n))}{\sqrt N}

    A model's expected test NLL minus ``H`` is its KL divergence from ``p`` (>= 0).

    :param dist: any distribution with exact ``sample`` and normalized ``log_prob``.
    :param rng_key: a JAX PRNG key (not an integer seed).
    :param int num_samples: ``N``.
    :param int chunk_size: ``log_prob`` is evaluated on ``chunk_size`` points at a time
        (``lax.map`` over chunks).
    :return: ``(estimate, standard_error)``, two scalar arrays (nats).

    Example::

        H, se = entropy(eight_gaussians(), jax.random.key(0), num_samples=100_000)   # ≈ 2.83
    """
    if not is_prng_key(rng_key):
        raise TypeError(
            "entropy: `rng_key` must be a JAX PRNG key (e.g. `jax.random.key(0)`), not an "
            f"integer seed; got {rng_key!r}."
        )
    n = check_int("num_samples", num_samples, minimum=2)
    b = min(check_int("chunk_size", chunk_size, minimum=1), n)
    num_chunks = -(-n // b)
    x = dist.sample(rng_key, (num_chunks * b,)).reshape((num_chunks, b) + dist.event_shape)
    log_p = lax.map(dist.log_prob, x).reshape(-1)[:n]
    return -log_p.mean(), log_p.std(ddof=1) / math.sqrt(n)


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
