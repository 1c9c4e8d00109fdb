r"""Energy networks: a default multilayer perceptron energy for low-dimensional data.

.. math::

    E_\theta(x) = w_L^\top \phi(W_{L-1} \cdots \phi(W_1\, u(x) + b_1) \cdots) + b_L
                  + \tfrac{c}{2}\,\|x\|^2,
    \qquad (\ldots, D) \to (\ldots)

with an optional input encoding :math:`u(x) = (x, \sin(2\pi B x), \cos(2\pi B x))` by
``fourier_features`` fixed frequencies :math:`B` (random Fourier features, Tancik et al. 2020:
an MLP on raw coordinates is biased towards smooth functions and blurs thin rings and sharp
edges), an optional confining term :math:`c\|x\|^2/2` (the network part grows at most linearly
in :math:`\|x\|`, so the energy grows quadratically far from the data: Langevin and MALA chains on
the learned energy cannot escape to where there is no data), and an optional noise-level input
for noise-conditional score matching (:class:`~numpyro_ebm.NoiseConditionalEnergy`).

A Flax ``linen`` module: register it in a model with
``numpyro.contrib.module.flax_module("energy", MLPEnergy(), input_shape=(1, D))`` and use the
returned callable as an :class:`~numpyro_ebm.Unnormalized` energy.

**Defaults for low-dimensional densities** (2-D toy densities, the quickstart): widths
``(128, 128)``, ``swish``, ``fourier_features=64`` at ``fourier_scale=0.5`` (frequencies of
order one per data unit for data of unit scale) and ``confinement=2.0``; see
:func:`default_energy`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from statistics import NormalDist

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

__all__ = ["MLPEnergy", "default_energy", "fourier_frequencies"]


def _primes(n: int) -> list[int]:
    primes, k = [], 2
    while len(primes) < n:
        if all(k % p for p in primes):
            primes.append(k)
        k += 1
    return primes


@functools.lru_cache(maxsize=64)
def _halton_normal(num_features: int, dim: int) -> np.ndarray:
    quantile = NormalDist().inv_cdf
    points = np.empty((num_features, dim))
    for j, base in enumerate(_primes(dim)):
        for i in range(num_features):
            f, r, n = 1.0, 0.0, i + 1
            while n > 0:
                f /= base
                r += f * (n % base)
                n //= base
            points[i, j] = quantile(r)
    points.setflags(write=False)
    return points


def fourier_frequencies(num_features: int, dim: int, scale: float = 1.0) -> np.ndarray:
    r"""``(num_features, dim)`` fixed quasi-random Gaussian frequencies, :math:`\mathcal N(0,
    \text{scale}^2)` in distribution.

    The rows are the points ``1..num_features`` of the Halton sequence in ``dim`` dimensions
    (bases: the first ``dim`` primes), mapped through the standard normal quantile function and
    scaled. Deterministic, so a network needs no random key or seed for them and they are a
    constant of the program, not a parameter (no optimizer, weight decay included, changes them);
    better spread than i.i.d. draws for the few hundred features a low-dimensional energy needs.
    """
    return scale * _halton_normal(int(num_features), int(dim))


class MLPEnergy(nn.Module):
    r"""A scalar energy: dense layers of widths ``hidden`` with ``activation``, then one output.

    :ivar hidden: hidden layer widths (default ``(64, 64)``).
    :ivar activation: the nonlinearity (default ``flax.linen.swish``, smooth, so score matching
        can differentiate the energy twice).
    :ivar fourier_features: ``F >= 0``; with ``F > 0`` the input ``x`` is encoded as
        ``(x, sin(2 pi B x), cos(2 pi B x))`` with ``B`` the ``(F, D)`` constant
        :func:`fourier_frequencies` (no trained parameter, no key).
    :ivar fourier_scale: standard deviation of the frequencies ``B`` (cycles per unit of ``x``);
        larger resolves sharper features, too large overfits (default 0.5).
    :ivar confinement: ``c >= 0``: adds ``c * max(|x| - r0, 0)^2 / 2`` to the energy (default
        0: none), ``r0`` = ``confinement_radius``.
    :ivar confinement_radius: ``r0 >= 0`` (default 0): the confining term starts at this radius,
        so that it does not distort the energy where the data are (within ``r0``).
    :ivar noise_conditional: when true, ``__call__(x, sigma)`` also takes the noise level
        ``sigma`` (a scalar or one per example), fed to the network as ``log sigma``
        (``sigma=None`` feeds 0, i.e. ``sigma = 1``, so that ``flax_module`` can initialize it
        from ``input_shape``). Wrap the registered module in
        :class:`~numpyro_ebm.NoiseConditionalEnergy` to train it with noise-conditional
        :class:`~numpyro_ebm.DenoisingScoreMatching`.

    Shapes: ``x`` ``(..., D)`` -> ``(...)``.

    **Example**

    .. code-block:: python

        def model(data):
            net = flax_module("energy", numpyro_ebm.nets.MLPEnergy(fourier_features=64,
                                                                    confinement=0.1),
                              input_shape=(1, 2))
            with numpyro.plate("data", data.shape[0], subsample_size=256):
                batch = numpyro.subsample(data, event_dim=1)
                numpyro.sample("x", numpyro_ebm.Unnormalized(net, (2,)), obs=batch)
    """

    hidden: Sequence[int] = (64, 64)
    activation: Callable = nn.swish
    fourier_features: int = 0
    fourier_scale: float = 0.5
    confinement: float = 0.0
    confinement_radius: float = 0.0
    noise_conditional: bool = False

    @nn.compact
    def __call__(self, x, sigma=None):
        if (self.fourier_features < 0 or self.confinement < 0 or self.fourier_scale <= 0
                or self.confinement_radius < 0):
            raise ValueError(
                "MLPEnergy: expected `fourier_features` >= 0, `fourier_scale` > 0, "
                "`confinement` >= 0 and `confinement_radius` >= 0; got "
                f"{self.fourier_features}, {self.fourier_scale}, {self.confinement}, "
                f"{self.confinement_radius}."
            )
        h = x
        if self.fourier_features:
            B = jnp.asarray(
                fourier_frequencies(self.fourier_features, x.shape[-1], self.fourier_scale),
                x.dtype,
            )
            proj = 2 * math.pi * (x @ B.T)
            h = jnp.concatenate([x, jnp.sin(proj), jnp.cos(proj)], axis=-1)
        if self.noise_conditional:
            if sigma is None:
                log_sigma = jnp.zeros(x.shape[:-1] + (1,), x.dtype)
            else:
                log_sigma = jnp.broadcast_to(
                    jnp.log(jnp.asarray(sigma, x.dtype))[..., None], x.shape[:-1] + (1,)
                )
            h = jnp.concatenate([h, log_sigma], axis=-1)
        elif sigma is not None:
            raise ValueError(
                "MLPEnergy: got `sigma`, but the network is not noise-conditional; build it with "
                "`MLPEnergy(noise_conditional=True)`."
            )
        for width in self.hidden:
            h = self.activation(nn.Dense(width)(h))
        energy = nn.Dense(1)(h)[..., 0]
        if self.confinement:
            if self.confinement_radius:
                # sqrt(|x|^2 + tiny): differentiable at 0 (where the term is 0 anyway)
                r = jnp.sqrt(jnp.sum(x**2, axis=-1) + jnp.finfo(x.dtype).tiny)
                excess = jnp.maximum(r - self.confinement_radius, 0.0) ** 2
            else:
                excess = jnp.sum(x**2, axis=-1)
            energy = energy + 0.5 * self.confinement * excess
        return energy


def default_energy(**overrides) -> MLPEnergy:
    """The documented default energy network for low-dimensional (2-D to ~10-D) densities:
    ``MLPEnergy(hidden=(128, 128), activation=swish, fourier_features=64, fourier_scale=0.5,
    confinement=2.0)``, with any field overridden by keyword.

    Chosen on two moons (the quickstart, data of unit scale): the Fourier features let the
    network resolve the moons' 0.2-wide cross-section, and the confinement keeps MALA chains on
    the learned energy within the data's range (the network cancels the quadratic where the data
    are). For data of scale ``s``, divide ``fourier_scale`` by ``s`` and ``confinement`` by
    ``s**2`` (or standardize the data)."""
    options = dict(
        hidden=(128, 128), activation=nn.swish, fourier_features=64, fourier_scale=0.5,
        confinement=2.0,
    )
    options.update(overrides)
    return MLPEnergy(**options)
