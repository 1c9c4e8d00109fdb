r"""Annealed importance sampling (Neal 2001): log partition functions of energy-based models.

Anneal ``num_chains`` independent chains from a normalized base :math:`p_0` to the target
:math:`e^{-E(x)}` through the intermediate unnormalized log densities

.. math::

    f_\beta(x) = (1 - \beta)\log p_0(x) - \beta E(x),\qquad 0 = \beta_0 < \beta_1 < \dots
    < \beta_K = 1 .

Each chain starts at :math:`x_0 \sim p_0`; at temperature :math:`k = 1, \dots, K` it adds
:math:`f_{\beta_k}(x_{k-1}) - f_{\beta_{k-1}}(x_{k-1})` to its log-weight and then moves
:math:`x_{k-1} \to x_k` with an MCMC transition that leaves :math:`f_{\beta_k}` invariant. Then
:math:`\mathbb E[w] = Z / Z_0` and

.. math::

    \widehat{\log Z} = \log Z_0 + \log \frac1N \sum_{n=1}^N w_n,\qquad
    \operatorname{se}(\widehat{\log Z}) \approx
        \frac{\operatorname{sd}(w)}{\sqrt N\,\operatorname{mean}(w)}

(the delta method on the log of the mean). By Jensen's inequality the estimate is a stochastic
*lower* bound of :math:`\log Z` in expectation; its bias and its error bar both shrink as the
number of temperatures grows. The error bar is only as good as the weights' sample variance: with
too few temperatures it can be too small (a heavy right tail that no chain has reached yet).

:func:`logz_ais` is the general estimator (any energy, any BlackJAX kernel built per temperature);
:func:`annealed_importance_sampling` is the engine it shares with the model-specific versions
(:meth:`numpyro_ebm.models.RBM.logz_ais`, :meth:`numpyro_ebm.models.DBM.logz_ais`), which anneal
along paths whose transitions are exact block Gibbs steps.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.smc.ess import ess as effective_sample_size
from numpyro.distributions import Distribution

from numpyro_ebm._validation import check_int, check_rng_key, is_concrete, leading_size
from numpyro_ebm.distribution import Unnormalized
from numpyro_ebm.sampling.annealing import AnnealingPath, check_path_kernel, geometric_path
from numpyro_ebm.sampling.distributed import constrain_chains

__all__ = [
    "AISResult",
    "NegativeEnergy",
    "energy_path",
    "warn_nan_chains",
    "annealed_importance_sampling",
    "check_betas",
    "logz_ais",
    "temperature_schedule",
]


class AISResult(NamedTuple):
    """What :func:`logz_ais` returns.

    :ivar log_Z: the estimate of :math:`\\log Z`, a scalar.
    :ivar stderr: its standard error (delta method on the log of the mean weight), a scalar.
    :ivar log_weights: ``(num_chains,)`` log importance weights :math:`\\log w_n` (``log_Z`` is
        ``log_Z_base + logsumexp(log_weights) - log(num_chains)``).
    :ivar ess: effective sample size of the weights, :math:`(\\sum w)^2 / \\sum w^2`
        (``blackjax.smc.ess.ess`` of the log-weights).
    :ivar positions: the chains' final positions (approximate draws from the target), leading axis
        ``num_chains``.
    :ivar betas: the ``(K + 1,)`` inverse temperatures used, from 0 to 1.
    """

    log_Z: jax.Array
    stderr: jax.Array
    log_weights: jax.Array
    ess: jax.Array
    positions: Any
    betas: jax.Array


def temperature_schedule(num_temperatures: int, schedule: str = "sigmoid", sharpness=4.0):
    r"""``num_temperatures + 1`` inverse temperatures :math:`0 = \beta_0 < \dots < \beta_K = 1`.

    ``"linear"``: equally spaced. ``"sigmoid"`` (default; Grosse et al. 2013): :math:`\beta_k
    \propto \sigma(\delta (2k/K - 1))`, rescaled to :math:`[0, 1]`, which spends more temperatures
    near both ends, where the intermediate distributions change fastest.
    ``"geometric"``: :math:`\beta_k = 10^{-4 (1 - k/K)}` for :math:`k \ge 1` (dense near 0).

    :param int num_temperatures: ``K >= 1``, the number of annealing steps.
    :param str schedule: ``"sigmoid"``, ``"linear"`` or ``"geometric"``.
    :param float sharpness: :math:`\delta` of the sigmoid schedule.
    :return: a float32 array of shape ``(K + 1,)``.
    """
    k = check_int("num_temperatures", num_temperatures, 1)
    t = np.linspace(0.0, 1.0, k + 1)
    if schedule == "linear":
        betas = t
    elif schedule == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-sharpness * (2.0 * t - 1.0)))
        betas = (s - s[0]) / (s[-1] - s[0])
    elif schedule == "geometric":
        betas = np.concatenate([[0.0], np.logspace(-4, 0, k)]) if k > 1 else t
    else:
        raise ValueError(
            f"`schedule` must be 'sigmoid', 'linear' or 'geometric', got {schedule!r}."
        )
    return jnp.asarray(betas, jnp.float32)


def check_betas(betas) -> jax.Array:
    """``betas`` as a float array, checked: 1-D, at least two entries, and (where concrete)
    non-decreasing from 0 to 1; else a ``ValueError`` naming ``betas``."""
    betas = jnp.asarray(betas)
    if betas.ndim != 1 or betas.shape[0] < 2:
        raise ValueError(
            "`betas` must be a 1-D array of at least two inverse temperatures from 0 to 1, got "
            f"shape {betas.shape}."
        )
    if is_concrete(betas):
        b = np.asarray(betas, np.float64)
        if not np.all(np.isfinite(b)):
            raise ValueError(
                f"`betas` must be finite inverse temperatures in [0, 1]; it holds "
                f"{int(np.count_nonzero(~np.isfinite(b)))} NaN or infinite value(s)."
            )
        if not (abs(b[0]) < 1e-7 and abs(b[-1] - 1.0) < 1e-6 and np.all(np.diff(b) >= 0)):
            raise ValueError(
                "`betas` must increase from 0 to 1 (first 0, last 1, non-decreasing); got "
                f"first {b[0]}, last {b[-1]}, min step {np.diff(b).min():.3g}."
            )
    dtype = jnp.result_type(float)
    return betas if betas.dtype == dtype else betas.astype(dtype)  # no eager op when it is


def _summarize(log_Z_base, log_weights, positions, betas) -> AISResult:
    n = log_weights.shape[0]
    finite = jnp.where(jnp.isnan(log_weights), -jnp.inf, log_weights)
    shift = jnp.max(finite)
    w = jnp.exp(finite - shift)
    mean_w = jnp.mean(w)
    log_Z = log_Z_base + shift + jnp.log(mean_w)
    sd = jnp.std(w, ddof=1) if n > 1 else jnp.asarray(jnp.inf, w.dtype)
    stderr = sd / (jnp.sqrt(n) * mean_w)
    ess = effective_sample_size(finite)
    return AISResult(log_Z, stderr, log_weights, ess, positions, betas)


def warn_nan_chains(result: AISResult, caller: str = "logz_ais") -> None:
    r"""Warn (``RuntimeWarning``) with the count of chains whose log-weight is NaN: AIS gives
    them weight 0, which biases :math:`\log Z` (down) without widening the error bar. Skipped on
    traced values."""
    if not is_concrete(result.log_weights):
        return
    log_weights = np.asarray(result.log_weights)
    k = int(np.count_nonzero(np.isnan(log_weights)))
    if k:
        warnings.warn(
            f"{caller}: {k} of {log_weights.size} chains have NaN log-weights and were given "
            "weight 0, so log Z and its stderr are biased. The energy (or the base's log "
            "density) is NaN somewhere along the annealing path, or the kernel diverged: check "
            "the energy for NaN, reduce the kernel's step_size, or use more temperatures.",
            RuntimeWarning,
            stacklevel=3,
        )


def _init_reads_key(path: AnnealingPath, positions, rng_key) -> bool:
    """Whether ``path.kernel(beta).init(position, rng_key)`` reads its key: traced once (shapes
    only), the key is an input of none of its operations when it does not."""
    algorithm = path.kernel(1.0)
    position = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), positions)
    key = jax.eval_shape(lambda k: jax.random.split(k, 1)[0], rng_key)
    jaxpr = jax.make_jaxpr(lambda x, k: algorithm.init(x, k))(position, key).jaxpr
    key_var = jaxpr.invars[-1]
    return any(v is key_var for e in jaxpr.eqns for v in e.invars) or any(
        v is key_var for v in jaxpr.outvars
    )


def annealed_importance_sampling(
    rng_key,
    path: AnnealingPath,
    betas,
    num_chains: int,
    num_steps: int = 1,
    init_positions=None,
) -> AISResult:
    r"""The AIS engine: anneal ``num_chains`` chains along an :class:`~numpyro_ebm.AnnealingPath`.

    Chains start at exact draws of the path's base (``path.sample_base``) or at
    ``init_positions``; at each temperature ``k`` they add
    :math:`f_{\beta_k}(x) - f_{\beta_{k-1}}(x)` to their log-weights and then take ``num_steps``
    transitions of ``path.kernel(beta_k)``. The loop over temperatures is a ``lax.scan``, chains
    are ``vmap``-ed, and the whole run is ``jit``-compatible (``betas`` may be traced).

    :param rng_key: a JAX PRNG key.
    :param path: the :class:`~numpyro_ebm.AnnealingPath` (its ``log_Z_base`` is :math:`\log Z_0`).
    :param betas: ``(K + 1,)`` inverse temperatures increasing from 0 to 1.
    :param int num_chains: number of independent annealing runs.
    :param int num_steps: MCMC transitions at each temperature.
    :param init_positions: optional exact draws from the base, leading axis ``num_chains``.
    :return: an :class:`AISResult`.
    """
    rng_key = check_rng_key(rng_key)
    betas = check_betas(betas)
    base_key, run_key = jax.random.split(rng_key)
    if init_positions is None:
        init_positions = path.sample_base(base_key, num_chains)
    if leading_size("init_positions", init_positions) != num_chains:
        raise ValueError(
            f"`init_positions` has {leading_size('init_positions', init_positions)} chains, "
            f"expected num_chains={num_chains}."
        )
    f = path.logdensity_fn

    # A key of its own for the kernel's init only when the init reads one (most inits, e.g.
    # MALA's, ignore it: drawing unused keys cost ~3% of a run of a 2-D target).
    init_key = int(_init_reads_key(path, init_positions, rng_key))

    def transition(keys, beta, x):  # keys: (num_steps + init_key,), the init's first if any
        algorithm = path.kernel(beta)
        state = algorithm.init(x, keys[0])
        keys = keys[1:] if init_key else keys
        if num_steps == 1:  # the common case, without a loop of one step
            return algorithm.step(keys[0], state)[0].position
        state, _ = jax.lax.scan(lambda s, k: (algorithm.step(k, s)[0], None), state, keys)
        return state.position

    def one_temperature(carry, inputs):
        x, log_w = carry
        beta_prev, beta, key = inputs
        log_w = log_w + jax.vmap(lambda xi: f(beta, xi) - f(beta_prev, xi))(x)
        # every chain's keys of this temperature in one draw (per-chain splits cost 1.4x the
        # whole run of a 2-D target)
        keys = jax.random.split(key, (num_chains, num_steps + init_key))
        x = jax.vmap(lambda k, xi: transition(k, beta, xi))(keys, x)
        return constrain_chains((x, log_w), num_chains), None

    keys = jax.random.split(run_key, betas.shape[0] - 1)
    log_w0 = jnp.zeros((num_chains,), betas.dtype)
    # chains split over every device (of every process, under jax.distributed) when they divide
    init_positions, log_w0 = constrain_chains((init_positions, log_w0), num_chains)
    (x, log_w), _ = jax.lax.scan(
        one_temperature, (init_positions, log_w0), (betas[:-1], betas[1:], keys)
    )
    result = _summarize(jnp.asarray(path.log_Z_base, log_w.dtype), log_w, x, betas)
    warn_nan_chains(result, "annealed_importance_sampling")
    return result


def logz_ais(
    rng_key,
    target,
    base: Distribution | None = None,
    kernel: Callable | None = None,
    num_chains: int = 256,
    num_temperatures: int = 1000,
    *,
    betas=None,
    num_steps: int = 1,
    schedule: str = "sigmoid",
) -> AISResult:
    r"""Estimate :math:`\log Z = \log \int e^{-E(x)} dx` (or a sum, for discrete ``x``) by AIS.

    ``target`` is one of

    * an energy function ``E`` (one position -> scalar), with a normalized ``base`` distribution
      and a kernel *factory*: the geometric path
      :math:`f_\beta(x) = (1-\beta)\log p_0(x) - \beta E(x)` (:func:`numpyro_ebm.geometric_path`),
      the factory called with :math:`f_\beta` at each temperature;
    * an :class:`~numpyro_ebm.AnnealingPath`, e.g. a classical model's
      ``model.annealing_path(params)`` (its exact block-Gibbs kernels); ``base`` and ``kernel``
      must then be ``None``;
    * an :class:`~numpyro_ebm.Unnormalized` distribution: its own ``annealing_path`` when
      ``kernel`` is ``None`` (``model.distribution(params)``), else the geometric path of its
      energy with ``base`` and ``kernel``.

    :param rng_key: a JAX PRNG key.
    :param target: see above.
    :param base: the normalized base :math:`p_0` of the geometric path, a NumPyro distribution
        with ``sample`` and ``log_prob`` over the same events (e.g.
        ``dist.Normal(0, 3).expand([2]).to_event(1)``); the closer to the target, the fewer
        temperatures are needed.
    :param kernel: a factory ``logdensity_fn -> blackjax.SamplingAlgorithm`` (e.g.
        ``functools.partial(blackjax.mala, step_size=0.1)``, ``functools.partial(
        numpyro_ebm.gibbs, values=(0, 1))`` for binary variables). An algorithm already bound to
        a density (``model.kernel(params)``) is refused: it would not sample :math:`f_\beta`.
    :param int num_chains: number of independent annealing runs :math:`N`.
    :param int num_temperatures: ``K``, used with ``schedule`` when ``betas`` is not given.
    :param betas: optional ``(K + 1,)`` schedule increasing from 0 to 1 (overrides
        ``num_temperatures`` and ``schedule``).
    :param int num_steps: MCMC transitions at each temperature.
    :param str schedule: see :func:`temperature_schedule`.
    :return: :class:`AISResult` ``(log_Z, stderr, log_weights, ess, positions, betas)``.
    :warns RuntimeWarning: when some chains end with a NaN log-weight (the count is given); they
        get weight 0 (:func:`warn_nan_chains`).
    :raises TypeError: ``kernel`` is not a factory (e.g. an algorithm already built).
    :raises ValueError: the kernel does not sample the density it is given: before anything is
        compiled, ``path.kernel(0.5)`` is initialized at a few base draws and the log density its
        state reports (when it has a ``logdensity`` field) must equal :math:`f_{0.5}` up to a
        constant (:func:`numpyro_ebm.sampling.annealing.check_path_kernel`).

    The estimate and its error bar assume that every ``path.kernel(beta)`` leaves
    :math:`\exp f_\beta` invariant; a kernel that samples another density gives a wrong
    :math:`\log Z` with an error bar that can look small. The check above catches the common
    cases (a factory that ignores its argument), not every non-invariant kernel.

    The compiled program is cached per (``target``, ``base``, ``kernel``, ``num_chains``,
    ``num_steps``) and the shapes of ``betas``: a second call with the same objects does not
    recompile. As with ``jax.jit``, values that ``target`` or ``kernel`` read from an enclosing or
    global scope are frozen at the first call; pass new functions when they change.

    **Example**

    .. code-block:: python

        energy = lambda x: 0.5 * jnp.sum(x**2) / 0.5**2        # log Z = log(2 pi 0.25)
        base = dist.Normal(0.0, 2.0).expand([2]).to_event(1)
        res = numpyro_ebm.logz_ais(jax.random.key(0), energy, base,
                                   functools.partial(blackjax.mala, step_size=0.05),
                                   num_chains=512, num_temperatures=200)
        res.log_Z, res.stderr
        ising = numpyro_ebm.models.Ising((8, 8))
        numpyro_ebm.logz_ais(jax.random.key(1), ising.annealing_path(ising.init_params()))
    """
    rng_key = check_rng_key(rng_key)
    num_chains = check_int("num_chains", num_chains, 1)
    num_steps = check_int("num_steps", num_steps, 1)
    if betas is None:
        betas = temperature_schedule(num_temperatures, schedule)
    betas = check_betas(betas)
    cache_key = _cache_key(target, base, kernel)
    path = _CHECKED.get(cache_key)
    if path is None:  # once per target, like the compiled program (eager checks cost more than
        path = energy_path(target, base, kernel, "logz_ais")  # a small AIS run)
        _check_energy_shape(path, base)
        check_path_kernel(path, 0.5, caller="logz_ais")
        _CHECKED[cache_key] = path
        while len(_CHECKED) > 64:
            _CHECKED.pop(next(iter(_CHECKED)))
    elif kernel is None:  # the target's own path, whose log_Z_base is not part of the key
        path = energy_path(target, base, kernel, "logz_ais")
    program = _Program(path, cache_key, num_chains, num_steps)
    result = _run_ais(rng_key, betas, jnp.asarray(path.log_Z_base), program=program)
    warn_nan_chains(result, "logz_ais")
    return result


def _check_energy_shape(path, base) -> None:
    if base is None:
        return
    # shapes only: nothing is compiled or run
    energy_shape = jax.eval_shape(
        lambda key: path.logdensity_fn(1.0, base.sample(key)), jax.random.key(0)
    ).shape
    if energy_shape != ():
        raise ValueError(
            f"`target` must map one position of shape {tuple(base.event_shape)} to a scalar "
            f"energy; it returned shape {energy_shape}. (`base` fixes the event shape.)"
        )


class NegativeEnergy:
    """``x -> -energy(x)``, equal (and hashing equal) to every other ``NegativeEnergy`` of the
    same ``energy``: a log density that compiled-program caches recognize across calls."""

    def __init__(self, energy: Callable):
        self.energy = energy

    def __call__(self, x):
        return -self.energy(x)

    def __hash__(self):
        return hash((NegativeEnergy, self.energy))

    def __eq__(self, other):
        return isinstance(other, NegativeEnergy) and other.energy is self.energy


def energy_path(target, base=None, kernel=None, caller: str = "logz") -> AnnealingPath:
    """The :class:`~numpyro_ebm.AnnealingPath` of a log-Z estimator's ``target`` (one reading for
    :func:`~numpyro_ebm.logz_ais`, ``logz_stepping_stone`` and ``logz_smc``): an ``AnnealingPath`` (``base``, ``kernel`` None), an
    ``Unnormalized`` distribution carrying one (``kernel`` None), or an energy function (or an
    ``Unnormalized``) with a normalized ``base`` and a kernel factory (the geometric path)."""
    if isinstance(target, AnnealingPath):
        if base is not None or kernel is not None:
            raise ValueError(
                f"{caller}: `target` is an AnnealingPath, which brings its own base and kernels; "
                "leave `base` and `kernel` as None."
            )
        return target
    if isinstance(target, Unnormalized) and kernel is None and base is None:
        if target.annealing_path is None:
            raise ValueError(
                f"{caller}: this Unnormalized distribution has no annealing path of its own; pass "
                "a normalized `base` distribution and a kernel factory `kernel`."
            )
        return target.annealing_path
    energy = target.energy if isinstance(target, Unnormalized) else target
    if not callable(energy):
        raise TypeError(
            f"{caller}: `target` must be an energy function x -> E(x), an AnnealingPath or an "
            f"Unnormalized distribution; got {target!r}."
        )
    if base is None or kernel is None:  # a `base` of the wrong type: geometric_path's TypeError
        raise ValueError(
            f"{caller}: with an energy function as `target`, pass a normalized `base` NumPyro "
            "distribution and a kernel factory `kernel` (or pass `model.annealing_path(params)`)."
        )
    return geometric_path(NegativeEnergy(energy), base, kernel)


#: the paths of the targets whose kernel passed :func:`check_path_kernel`, by :func:`_cache_key`
#: (insertion-ordered, bounded)
_CHECKED: dict = {}


def _cache_key(target, base, kernel):
    """What fixes the compiled AIS program: the user's own objects, hashed by identity (a fresh
    ``object()`` when they are not hashable, so that nothing is shared)."""
    if isinstance(target, Unnormalized) and base is None and kernel is None:
        target = target.annealing_path
    if isinstance(target, AnnealingPath):  # log_Z_base is an argument of the program, not a key
        key = (target.logdensity_fn, target.kernel, target.sample_base)
    else:
        key = (target, base, kernel)
    try:
        hash(key)
    except TypeError:
        return object()
    return key


class _Program:
    """The path of one :func:`logz_ais` call as a ``jax.jit`` static argument: equal across calls
    with the same target, base, kernel and sizes, so that the jitted runner is reused."""

    def __init__(self, path, cache_key, num_chains, num_steps):
        self.path, self.num_chains, self.num_steps = path, num_chains, num_steps
        self.key = (cache_key, num_chains, num_steps)

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, _Program) and self.key == other.key


@partial(jax.jit, static_argnames=("program",))
def _run_ais(rng_key, betas, log_Z_base, *, program):
    path = program.path._replace(log_Z_base=log_Z_base)
    return annealed_importance_sampling(rng_key, path, betas, program.num_chains, program.num_steps)
