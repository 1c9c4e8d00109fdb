r"""Annealing paths: a family of densities from a tractable base to the target, each with a sampler.

.. math::

    \pi_\beta(x) \propto \exp f_\beta(x),\qquad \beta \in [0, 1],

where :math:`\exp f_0` is a base whose normalizer :math:`Z_0` is known and which can be drawn
from exactly, and :math:`f_1` is the target's log density :math:`-E(x)`. For every
:math:`\beta` the path supplies a BlackJAX ``SamplingAlgorithm`` that leaves
:math:`\pi_\beta` invariant. Drivers that move along :math:`\beta` (annealed importance
sampling, tempering) take a path, so the sampler always matches the density the driver uses.

Two ways to get one:

* :func:`geometric_path`: any log density, any normalized base distribution and any kernel
  *factory* (``logdensity_fn -> SamplingAlgorithm``):
  :math:`f_\beta = (1-\beta)\log p_0 + \beta\log p`; the factory is called with
  :math:`f_\beta` itself.
* a classical model's own path, ``model.annealing_path(params)`` (Ising, RBM, DBM, ...): a path
  whose samplers are the model's exact block-Gibbs kernels at each :math:`\beta` (for an RBM
  the weights are scaled, which is not the geometric path of its free energy, but is the one
  along which block Gibbs stays exact). ``model.distribution(params)`` carries that path, so
  drivers that are handed the distribution find it (``Unnormalized.annealing_path``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions import Distribution

from numpyro_ebm._validation import is_concrete

__all__ = [
    "AnnealingPath",
    "TransitionInfo",
    "TransitionState",
    "check_path_kernel",
    "geometric_path",
    "transition_path",
]


class AnnealingPath(NamedTuple):
    r"""A path of unnormalized densities :math:`\exp f_\beta`, :math:`\beta \in [0, 1]`.

    :ivar logdensity_fn: ``(beta, x) -> f_beta(x)``, a scalar for one position ``x``;
        ``f_1`` is the target's log density (``-E``), ``f_0`` the base's (up to ``log_Z_base``).
    :ivar kernel: ``beta -> blackjax.SamplingAlgorithm`` whose transitions leave
        :math:`\exp f_\beta` invariant (``beta`` may be traced).
    :ivar sample_base: ``(rng_key, num_chains) -> positions``: exact draws from the normalized
        base :math:`\exp f_0 / Z_0`, leading axis ``num_chains``.
    :ivar log_Z_base: :math:`\log Z_0 = \log \int \exp f_0` (0 for a normalized base density).
    """

    logdensity_fn: Callable
    kernel: Callable
    sample_base: Callable
    log_Z_base: Any


def geometric_path(logdensity_fn: Callable, base: Distribution, kernel: Callable) -> AnnealingPath:
    r"""The geometric path :math:`f_\beta(x) = (1-\beta)\log p_0(x) + \beta \log p(x)`.

    :param logdensity_fn: :math:`\log p(x) = -E(x)` up to a constant, for one position.
    :param base: the normalized base :math:`p_0`, a NumPyro distribution with ``sample`` and
        ``log_prob`` over the same events (e.g. ``dist.Normal(0, 3).expand([2]).to_event(1)``).
    :param kernel: a factory ``logdensity_fn -> blackjax.SamplingAlgorithm`` (e.g.
        ``functools.partial(blackjax.mala, step_size=0.1)``); it is called with
        :math:`f_\beta` for each :math:`\beta`, so it samples the tempered density.
    :return: an :class:`AnnealingPath` with ``log_Z_base = 0``.
    """
    from numpyro_ebm.sampling.chains import build_algorithm

    if not callable(logdensity_fn):
        raise TypeError(f"`logdensity_fn` must be a callable x -> log p(x), got {logdensity_fn!r}.")
    if not isinstance(base, Distribution):
        raise TypeError(
            "`base` must be a normalized NumPyro distribution (with sample and log_prob), e.g. "
            f"`dist.Normal(0, 3).expand([2]).to_event(1)`; got {base!r}."
        )
    if tuple(base.batch_shape) != ():
        raise ValueError(
            f"`base` must describe one position (batch_shape ()); it has batch_shape "
            f"{tuple(base.batch_shape)} and event_shape {tuple(base.event_shape)}: make its batch "
            f"dimensions part of the event with `.to_event({len(base.batch_shape)})`, e.g. "
            "`dist.Normal(0, 3).expand([2]).to_event(1)`."
        )
    build_algorithm(kernel, base.log_prob)  # fail now on a kernel that is not a factory

    def f(beta, x):
        return (1.0 - beta) * base.log_prob(x) + beta * logdensity_fn(x)

    def kernel_at(beta):
        return build_algorithm(kernel, lambda x: f(beta, x))

    def sample_base(rng_key, num_chains):
        return base.sample(rng_key, (num_chains,))

    return AnnealingPath(f, kernel_at, sample_base, jnp.zeros(()))


class TransitionState(NamedTuple):
    """State of a :func:`transition_path` kernel: the position and its log density."""

    position: Any
    logdensity: Any


class TransitionInfo(NamedTuple):
    """Info of a :func:`transition_path` step: exact draws are always accepted."""

    acceptance_rate: Any


def transition_path(
    logdensity_fn: Callable, transition: Callable, sample_base: Callable, log_Z_base
) -> AnnealingPath:
    r"""An :class:`AnnealingPath` from an exact transition ``(rng_key, beta, x) -> x``.

    For models whose sampler at every :math:`\beta` is a few lines of exact conditional draws
    (block Gibbs): ``kernel(beta)`` wraps ``transition`` as a ``blackjax.SamplingAlgorithm``
    whose state is :class:`TransitionState` (``logdensity`` is :math:`f_\beta` at the position).

    :param logdensity_fn: ``(beta, x) -> f_beta(x)``.
    :param transition: ``(rng_key, beta, x) -> x``, leaving :math:`\exp f_\beta` invariant.
    :param sample_base: ``(rng_key, num_chains) -> positions``, exact draws of the base.
    :param log_Z_base: :math:`\log \int \exp f_0`.
    """
    from blackjax.base import SamplingAlgorithm

    def kernel(beta):
        def init(position, rng_key=None):
            return TransitionState(position, logdensity_fn(beta, position))

        def step(rng_key, state):
            position = transition(rng_key, beta, state.position)
            new = TransitionState(position, logdensity_fn(beta, position))
            return new, TransitionInfo(jnp.ones((), jnp.result_type(float)))

        return SamplingAlgorithm(init, step)

    return AnnealingPath(logdensity_fn, kernel, sample_base, log_Z_base)


def _reported_and_expected(path: AnnealingPath, beta, num_draws: int):
    """``(reported, expected)`` log densities ``(num_draws, ...)`` of :func:`check_path_kernel`,
    or ``None`` when the kernel reports none (or one of another shape than ``f_beta``)."""
    base_key, init_key = jax.random.split(jax.random.key(0))
    draws = path.sample_base(base_key, num_draws)
    algorithm = path.kernel(beta)

    def one(x):
        state = algorithm.init(x, init_key)
        logdensity = getattr(state, "logdensity", None)
        if logdensity is None and callable(getattr(algorithm.init, "logdensity_fn", None)):
            logdensity = algorithm.init.logdensity_fn(x)  # a state without it (RBM block Gibbs)
        if logdensity is None:
            return None
        f = path.logdensity_fn(beta, x)
        if jnp.shape(logdensity) != jnp.shape(f):
            return None
        return jnp.asarray(logdensity), jnp.asarray(f)

    return jax.vmap(one)(draws)


def check_path_kernel(
    path: AnnealingPath, beta=0.5, num_draws: int = 4, caller: str = "logz_ais"
) -> None:
    r"""Check on a few base draws that ``path.kernel(beta)`` samples :math:`\exp f_\beta`.

    Draws ``num_draws`` positions :math:`x_j` from the base (a fixed key), initializes
    ``path.kernel(beta)`` at each, and compares the log density its state reports with
    :math:`f_\beta(x_j)` = ``path.logdensity_fn(beta, x_j)``. The two must agree up to one
    additive constant (a kernel may carry its density up to a constant; a constant does not change
    what it samples), within float tolerance. This catches kernel factories that ignore the density
    they are given, and paths whose kernels sample another density than ``logdensity_fn``.

    The kernel's log density is its state's ``logdensity``, or, for a state without one, its
    ``init.logdensity_fn`` (the density a kernel names as its target). The check is skipped when
    the kernel reports neither, when the values are
    traced (inside ``jit`` with traced parameters), and it cannot see a difference that is constant
    on the draws (e.g. when all draws coincide).

    :param path: the :class:`AnnealingPath`.
    :param beta: the inverse temperature checked.
    :param int num_draws: number of base draws.
    :param str caller: the public function named in the error.
    :raises ValueError: naming ``kernel`` and ``target`` when the log densities differ.
    """
    # one small compiled program, not dozens of eager operations (each compiled on its own: they
    # took 3-4 s of a 6-s first logz_ais call); None when the kernel reports no log density
    pair = jax.jit(lambda: _reported_and_expected(path, beta, num_draws))()
    if pair is None or not is_concrete(pair):  # traced: inside jit with traced parameters
        return
    reported = np.asarray(pair[0], np.float64).ravel()
    expected = np.asarray(pair[1], np.float64).ravel()
    finite = np.isfinite(reported) & np.isfinite(expected)
    difference = reported[finite] - expected[finite]
    spread = float(np.ptp(difference)) if difference.size else 0.0
    scale = float(np.max(np.abs(expected[finite]), initial=0.0))
    same_support = np.array_equal(np.isfinite(reported), np.isfinite(expected))
    if not same_support or spread > 1e-4 * scale + 1e-4:
        raise ValueError(
            f"{caller}: the `kernel` does not sample the density of the `target` path: at "
            f"beta={beta}, its state reports log densities {np.round(reported, 4).tolist()} at "
            f"{num_draws} base draws where f_beta is {np.round(expected, 4).tolist()} (not "
            "equal up to a constant). A kernel factory must build its sampler from the log density it is called with (e.g. "
            "`lambda f: blackjax.mala(f, 0.1)`, not a sampler of a fixed density); an "
            "AnnealingPath's `kernel(beta)` must leave exp(logdensity_fn(beta, x)) invariant."
        )
