r"""Noise-conditional energies and annealed Langevin dynamics (Song and Ermon 2019); short-run
annealed chains along a geometric path (:func:`anneal_chains`, PCD's ``anneal_steps``).

A *noise-conditional* energy :math:`E_\theta(x, \sigma)` models the data density smoothed by
:math:`\mathcal N(0, \sigma^2 I)` at every level of a ladder
:math:`\sigma_1 > \sigma_2 > \dots > \sigma_L` (geometric: :func:`geometric_sigmas`). It is
trained by noise-conditional :class:`~numpyro_ebm.DenoisingScoreMatching` (each example draws a
level, the energy sees that level), and sampled by annealed Langevin dynamics
(:func:`annealed_langevin`, Song and Ermon's algorithm 1): for :math:`i = 1, \dots, L`, with
:math:`\alpha_i = \epsilon\, \sigma_i^2 / \sigma_L^2`, ``num_steps`` times

.. math::

    x \leftarrow x - \tfrac{\alpha_i}{2} \nabla_x E_\theta(x, \sigma_i)
        + \sqrt{\alpha_i}\, z, \qquad z \sim \mathcal N(0, I).

At the large levels the smoothed density is nearly unimodal and chains move between what will
become separate modes; the mass splits between the modes while the smoothing still connects them,
so the samples land in every mode in proportion to its weight, which Langevin dynamics at the
smallest level alone (started anywhere) does not do.

:class:`NoiseConditionalEnergy` wraps ``energy_fn(x, sigma)`` together with its ladder: called
with ``x`` alone it is the energy at the smallest level, so ``Unnormalized(NoiseConditionalEnergy(
...), event_shape)`` is an ordinary site (usable by every sampler and estimator), and
:func:`at_noise_level` makes a plain ``Unnormalized`` at any level.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_ebm._validation import check_float, check_int, check_rng_key
from numpyro_ebm.sampling.chains import build_algorithm
from numpyro_ebm.sampling.tempering import tempered_logdensity

__all__ = [
    "AnnealedLangevinResult",
    "anneal_chains",
    "NoiseConditionalEnergy",
    "annealed_langevin",
    "at_noise_level",
    "check_sigmas",
    "geometric_sigmas",
]


def check_sigmas(sigmas, name: str = "sigmas") -> tuple[float, ...]:
    """``sigmas`` as a tuple of positive floats, largest first; raise naming ``name`` unless it
    is a positive float or a non-empty sequence of them."""
    values = tuple(np.ravel(np.asarray(sigmas, dtype=object))) if not np.isscalar(sigmas) else (
        sigmas,)
    if not values:
        raise ValueError(f"`{name}` must be a positive float or a non-empty tuple of them, got ().")
    values = tuple(check_float(name, s, positive=True) for s in values)
    return tuple(sorted(values, reverse=True))


def geometric_sigmas(sigma_max: float, sigma_min: float, num_sigmas: int) -> tuple[float, ...]:
    r"""The geometric ladder :math:`\sigma_i = \sigma_{\max} (\sigma_{\min}/\sigma_{\max})^{
    (i-1)/(L-1)}`, ``i = 1..L``, largest first (Song and Ermon 2019: :math:`\sigma_{\max}` about
    the largest distance between data points, :math:`\sigma_{\min}` below the finest detail)."""
    sigma_max = check_float("sigma_max", sigma_max, positive=True)
    sigma_min = check_float("sigma_min", sigma_min, positive=True)
    num_sigmas = check_int("num_sigmas", num_sigmas, 1)
    if sigma_min > sigma_max:
        raise ValueError(
            f"`sigma_min` ({sigma_min}) must not exceed `sigma_max` ({sigma_max})."
        )
    return tuple(float(s) for s in np.geomspace(sigma_max, sigma_min, num_sigmas))


class NoiseConditionalEnergy:
    r"""A noise-conditional energy :math:`E(x, \sigma)` with its ladder of noise levels.

    :param energy_fn: ``(x, sigma) -> energy``: ``x`` of shape ``(..., *event_shape)``, ``sigma``
        a scalar or an array broadcastable to ``x``'s batch shape ``(...)``; returns ``(...)``
        (e.g. a ``flax_module`` of ``MLPEnergy(noise_conditional=True)``).
    :param sigmas: the ladder (a tuple of positive floats, e.g. :func:`geometric_sigmas`), stored
        largest first. :class:`~numpyro_ebm.DenoisingScoreMatching` trains on it when its own
        ``sigma`` is None, :func:`annealed_langevin` anneals along it.

    ``energy(x)`` is :math:`E(x, \sigma_L)` (the smallest level: the model of the data itself),
    ``energy(x, sigma)`` any level.

    **Example**

    .. code-block:: python

        sigmas = numpyro_ebm.geometric_sigmas(3.0, 0.05, 10)

        def model(data):
            net = flax_module("energy", MLPEnergy(noise_conditional=True), input_shape=(1, 2))
            energy = numpyro_ebm.NoiseConditionalEnergy(net, sigmas)
            with numpyro.plate("data", data.shape[0], subsample_size=256):
                batch = numpyro.subsample(data, event_dim=1)
                numpyro.sample("x", numpyro_ebm.Unnormalized(energy, (2,)), obs=batch)

        svi = SVI(model, numpyro_ebm.no_guide, optax.adam(1e-3),
                  loss=numpyro_ebm.DenoisingScoreMatching())   # sigma=None: the energy's ladder
    """

    noise_conditional = True

    def __init__(self, energy_fn: Callable, sigmas):
        if not callable(energy_fn):
            raise TypeError(
                "NoiseConditionalEnergy: `energy_fn` must be a callable (x, sigma) -> energy, "
                f"got {energy_fn!r}."
            )
        self.energy_fn = energy_fn
        self.sigmas = check_sigmas(sigmas)

    @property
    def sigma_min(self) -> float:
        """The smallest level :math:`\\sigma_L`."""
        return self.sigmas[-1]

    def __call__(self, x, sigma=None):
        return self.energy_fn(x, self.sigma_min if sigma is None else sigma)

    def at(self, sigma=None) -> Callable:
        """The plain energy ``x -> E(x, sigma)`` (``None``: the smallest level)."""
        sigma = self.sigma_min if sigma is None else check_float("sigma", sigma, positive=True)
        return lambda x: self.energy_fn(x, sigma)

    def __repr__(self):
        return f"NoiseConditionalEnergy({self.energy_fn!r}, sigmas={self.sigmas})"


def _conditional_energy(target):
    """``(E(x, sigma), sigmas, event_shape or None)`` from a NoiseConditionalEnergy, an
    Unnormalized carrying one, or a plain callable ``(x, sigma) -> energy``."""
    from numpyro_ebm.distribution import Unnormalized

    event_shape = None
    if isinstance(target, Unnormalized):
        event_shape = tuple(target.event_shape)
        target = target.energy_fn
        if not isinstance(target, NoiseConditionalEnergy):
            raise TypeError(
                "`energy_fn`: this Unnormalized distribution's energy is not noise-conditional; "
                "build it as `Unnormalized(NoiseConditionalEnergy(energy_fn, sigmas), "
                "event_shape)`."
            )
    if isinstance(target, NoiseConditionalEnergy):
        return target.energy_fn, target.sigmas, event_shape
    if callable(target):
        return target, None, event_shape
    raise TypeError(
        "`energy_fn` must be a callable (x, sigma) -> energy, a NoiseConditionalEnergy or an "
        f"Unnormalized distribution carrying one; got {target!r}."
    )


def at_noise_level(dist, sigma=None):
    """An ordinary :class:`~numpyro_ebm.Unnormalized` with the energy :math:`E(\\cdot, \\sigma)` of
    a noise-conditional one (``sigma=None``: its smallest level), for samplers, ``logz_ais``,
    likelihoods or as a site of another model.

    :param dist: an ``Unnormalized`` whose ``energy_fn`` is a :class:`NoiseConditionalEnergy`.
    :param sigma: the level (a positive float) or ``None``.
    """
    from numpyro_ebm.distribution import Unnormalized

    if not isinstance(dist, Unnormalized) or not isinstance(dist.energy_fn, NoiseConditionalEnergy):
        raise TypeError(
            "`dist` must be an Unnormalized distribution whose energy_fn is a "
            f"NoiseConditionalEnergy; got {dist!r}."
        )
    return Unnormalized(
        dist.energy_fn.at(sigma), dist.event_shape, dist.support, dist.log_Z,
        batch_shape=dist.batch_shape,
    )


class AnnealedLangevinResult(NamedTuple):
    """What :func:`annealed_langevin` returns.

    :ivar positions: ``(num_chains, *event_shape)`` the final positions (after the optional
        denoising step).
    :ivar level_positions: ``(L, num_chains, *event_shape)`` the positions at the end of every
        level (largest sigma first), or ``None`` unless ``keep_levels``.
    :ivar sigmas: ``(L,)`` the ladder used, largest first.
    :ivar step_sizes: ``(L,)`` the step sizes :math:`\\alpha_i`.
    """

    positions: Any
    level_positions: Any
    sigmas: Any
    step_sizes: Any


def annealed_langevin(
    rng_key,
    energy_fn,
    init_positions,
    sigmas: Sequence[float] | None = None,
    num_steps: int = 100,
    step_size: float | None = None,
    *,
    denoise: bool = False,
    keep_levels: bool = False,
) -> AnnealedLangevinResult:
    r"""Annealed Langevin dynamics (Song and Ermon 2019, algorithm 1), from the largest noise
    level to the smallest, over many chains at once.

    For each level :math:`\sigma_i` (largest first), ``num_steps`` unadjusted Langevin steps
    :math:`x \leftarrow x - \frac{\alpha_i}{2}\nabla_x E(x, \sigma_i) + \sqrt{\alpha_i} z` with
    :math:`\alpha_i = \epsilon\,\sigma_i^2/\sigma_L^2`; with ``denoise`` a last Tweedie step
    :math:`x \leftarrow x - \sigma_L^2 \nabla_x E(x, \sigma_L)` (the posterior mean of the clean
    point, Jolicoeur-Martineau et al. 2021).

    :param rng_key: a JAX key.
    :param energy_fn: :math:`E(x, \sigma)`: a :class:`NoiseConditionalEnergy`, an
        ``Unnormalized`` carrying one, or a callable ``(x, sigma) -> energy`` on a batch ``x``
        ``(num_chains, *event_shape)`` with a scalar ``sigma``, returning ``(num_chains,)``.
    :param init_positions: ``(num_chains, *event_shape)`` starting points (e.g. uniform noise or
        :math:`\mathcal N(0, \sigma_1^2 I)` draws).
    :param sigmas: the ladder (any order; run largest first); default the energy's own.
    :param int num_steps: ``T``, Langevin steps per level.
    :param float step_size: :math:`\epsilon`, the step at the smallest level; default
        :math:`0.2\,\sigma_L^2`. The step at level :math:`i` relative to the smoothed variance
        :math:`\ge\sigma_i^2` is :math:`\le\epsilon/\sigma_L^2`, so :math:`\epsilon < 2\sigma_L^2`
        keeps every level stable.
    :param bool denoise: apply the final denoising step.
    :param bool keep_levels: return the positions at the end of every level.
    :return: :class:`AnnealedLangevinResult`.

    **Example**

    .. code-block:: python

        energy = numpyro_ebm.NoiseConditionalEnergy(lambda x, s: ..., sigmas)
        init = jax.random.uniform(jax.random.key(0), (4096, 2), minval=-8, maxval=8)
        x = numpyro_ebm.annealed_langevin(jax.random.key(1), energy, init, num_steps=100).positions
    """
    rng_key = check_rng_key(rng_key)
    E, own_sigmas, event_shape = _conditional_energy(energy_fn)
    if sigmas is None:
        if own_sigmas is None:
            raise ValueError(
                "`sigmas` is None and `energy_fn` carries no ladder: pass `sigmas` (e.g. "
                "`numpyro_ebm.geometric_sigmas(3.0, 0.05, 10)`) or a NoiseConditionalEnergy."
            )
        sigmas = own_sigmas
    sigmas = check_sigmas(sigmas)
    num_steps = check_int("num_steps", num_steps, 1)
    sigma_min = sigmas[-1]
    eps = 0.2 * sigma_min**2 if step_size is None else check_float(
        "step_size", step_size, positive=True)
    x0 = jnp.asarray(init_positions)
    if not jnp.issubdtype(x0.dtype, jnp.floating):
        x0 = x0.astype(jnp.result_type(float))
    if x0.ndim < 1 or x0.shape[0] == 0:
        raise ValueError(
            "`init_positions` must have shape (num_chains, *event_shape) with num_chains >= 1, "
            f"got {x0.shape}."
        )
    if event_shape is not None and tuple(x0.shape[1:]) != event_shape:
        raise ValueError(
            f"`init_positions` must have shape (num_chains, *{event_shape}), got {x0.shape}."
        )
    if not bool(jnp.all(jnp.isfinite(x0))):
        raise ValueError("`init_positions` holds NaN or inf.")
    sig = jnp.asarray(sigmas, x0.dtype)
    alphas = eps * sig**2 / sigma_min**2

    def grad_energy(x, sigma):
        energies, vjp = jax.vjp(lambda y: E(y, sigma), x)
        if energies.shape != x.shape[:1]:
            raise ValueError(
                f"`energy_fn` returned shape {energies.shape} for positions of shape {x.shape}; "
                f"expected ({x.shape[0]},), one energy per chain."
            )
        return vjp(jnp.ones_like(energies))[0]

    def level(x, inputs):
        i, sigma, alpha = inputs

        def step(x, t):
            z = jax.random.normal(jax.random.fold_in(jax.random.fold_in(rng_key, i), t),
                                  x.shape, x.dtype)
            return x - 0.5 * alpha * grad_energy(x, sigma) + jnp.sqrt(alpha) * z, None

        x, _ = jax.lax.scan(step, x, jnp.arange(num_steps))
        return x, (x if keep_levels else None)

    @jax.jit
    def run(x0):
        x, levels = jax.lax.scan(level, x0, (jnp.arange(len(sigmas)), sig, alphas))
        if denoise:
            x = x - sig[-1] ** 2 * grad_energy(x, sig[-1])
        return x, levels

    x, levels = run(x0)
    return AnnealedLangevinResult(x, levels, sig, alphas)


def anneal_chains(rng_key, logdensity_fn, base_logdensity_fn, kernel, positions, betas,
                  active=None):
    r"""Anneal chains from a base to a target: one transition of ``kernel`` at each
    :math:`\beta_j` of ``betas`` on :math:`f_\beta = (1-\beta)\log p_0 + \beta\log p`.

    :param logdensity_fn: :math:`\log p` for one position.
    :param base_logdensity_fn: :math:`\log p_0` for one position.
    :param kernel: a factory ``logdensity_fn -> blackjax.SamplingAlgorithm`` (built per chain and
        temperature; a Metropolis kernel keeps :math:`f_\beta` invariant).
    :param positions: ``(num_chains, *event_shape)``, e.g. draws of the base.
    :param betas: ``(J,)`` increasing inverse temperatures.
    :param active: optional ``(num_chains,)`` bool: chains where it is false run at
        :math:`\beta = 1` throughout (their transitions leave the target invariant).
    :return: the positions after the ``J`` transitions.
    """
    betas = jnp.asarray(betas)
    num_chains = positions.shape[0]
    if active is None:
        active = jnp.ones((num_chains,), bool)

    def one_chain(key, x, on):
        def step(x, inputs):
            j, beta = inputs
            b = jnp.where(on, beta, 1.0).astype(betas.dtype)
            algorithm = build_algorithm(
                kernel, lambda y: tempered_logdensity(b, base_logdensity_fn(y), logdensity_fn(y))
            )
            init_key, step_key = jax.random.split(jax.random.fold_in(key, j))
            state, _ = algorithm.step(step_key, algorithm.init(x, init_key))
            return state.position, None

        x, _ = jax.lax.scan(step, x, (jnp.arange(betas.shape[0]), betas))
        return x

    keys = jax.random.split(rng_key, num_chains)
    return jax.vmap(one_chain)(keys, positions, active)
