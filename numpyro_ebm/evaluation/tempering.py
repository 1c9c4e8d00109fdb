# Over ~400 lines on purpose: the two log-Z estimators along a tempering path (stepping stones
# from parallel tempering, tempered SMC) share their target resolution and result types.
r"""log Z along a tempering path: stepping stones from a parallel-tempering run, and tempered SMC.

Both use the path :math:`f_\beta` of :mod:`numpyro_ebm.sampling.annealing` (from a normalized base
:math:`p_0`, :math:`\log Z_0` known, to the target :math:`e^{-E}`), like AIS
(:func:`~numpyro_ebm.logz_ais`, the sequential version of the same idea).

**Stepping stones** (Xie et al. 2011) along a PT ladder :math:`0 = \beta_0 < \dots < \beta_K = 1`:

.. math::

    \log Z = \log Z_0 + \sum_{k=0}^{K-1} \log \hat r_k,\qquad
    \hat r_k = \frac1T \sum_t e^{f_{\beta_{k+1}}(x^t_k) - f_{\beta_k}(x^t_k)}
    \approx \mathbb E_{\pi_{\beta_k}}\big[e^{f_{\beta_{k+1}} - f_{\beta_k}}\big] = Z_{k+1}/Z_k,

with :math:`x^t_k` the replica at slot :math:`k` after step :math:`t` (accumulated in the
:class:`~numpyro_ebm.sampling.tempering.PTState`). The standard error is the delta method over
independent ensembles (chains): with per-chain means :math:`m_{ck}`, pooled means
:math:`\bar m_k`, :math:`u_c = \sum_k (m_{ck} - \bar m_k)/\bar m_k` and
:math:`\operatorname{se} = \operatorname{sd}(u)/\sqrt C` (it accounts for the autocorrelation
within a chain and the correlation between pairs). The reverse estimate
:math:`-\sum_k \log \frac1T\sum_t e^{f_{\beta_k}(x^t_{k+1}) - f_{\beta_{k+1}}(x^t_{k+1})}` is
returned beside it: in expectation the forward estimate lies below :math:`\log Z` and the reverse
above (Jensen), so a large gap between them says the ladder or the run is too short.

**Tempered SMC**: BlackJAX's ``adaptive_tempered_smc`` picks each next :math:`\beta` so that the
ESS of the incremental weights is ``target_ess`` times the particle count, resamples, and moves
the particles with ``num_steps`` transitions of the path's kernel; its
:math:`\hat Z = Z_0\prod_t \frac1N\sum_n w^t_n` is unbiased. :func:`logz_smc` runs
``num_runs`` independent SMC samplers and combines their :math:`\hat Z` as AIS combines its
weights, with the same :class:`~numpyro_ebm.AISResult`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions import Distribution

from numpyro_ebm._validation import check_float, check_int, is_concrete, leading_size
from numpyro_ebm.distribution import Unnormalized
from numpyro_ebm.evaluation.ais import (
    AISResult,
    NegativeEnergy,
    check_betas,
    energy_path,
    temperature_schedule,
)
from numpyro_ebm.sampling.annealing import AnnealingPath, check_path_kernel
from numpyro_ebm.sampling.chains import sample_chains
from numpyro_ebm.sampling.tempering import (
    PTState,
    parallel_tempering,
    tempering_summary,
    tune_ladder,
)

__all__ = [
    "NegativeEnergy",
    "SteppingStoneResult",
    "energy_path",
    "logz_smc",
    "logz_stepping_stone",
    "stepping_stone",
]


class SteppingStoneResult(NamedTuple):
    r"""What :func:`stepping_stone` and :func:`logz_stepping_stone` return.

    :ivar log_Z: the forward stepping-stone estimate of :math:`\log Z`.
    :ivar stderr: its standard error (delta method over chains; NaN with one chain).
    :ivar log_Z_reverse: the reverse estimate (above ``log_Z`` in expectation).
    :ivar log_ratios: ``(K,)`` :math:`\log \hat r_k` per ladder pair.
    :ivar betas: ``(K + 1,)`` the ladder.
    :ivar rejection_rates: ``(K,)`` swap rejection rate per pair.
    :ivar barrier: :math:`\Lambda = \sum_k r_k`.
    :ivar round_trip_rate: round trips per step per ensemble.
    :ivar positions: final :math:`\beta = 1` positions, leading axis ``num_chains``.
    """

    log_Z: jax.Array
    stderr: jax.Array
    log_Z_reverse: jax.Array
    log_ratios: jax.Array
    betas: jax.Array
    rejection_rates: jax.Array
    barrier: jax.Array
    round_trip_rate: jax.Array
    positions: Any


def _log_means(log_sums, n):
    """Per-chain log means ``(C, K)`` and their pooled log mean ``(K,)``, stably."""
    log_m = log_sums - jnp.log(n)[:, None]
    shift = jnp.max(jnp.where(jnp.isfinite(log_m), log_m, -jnp.inf), axis=0)
    shift = jnp.where(jnp.isfinite(shift), shift, 0.0)
    m = jnp.exp(log_m - shift)
    return m, shift + jnp.log(jnp.mean(m, axis=0))


def stepping_stone(state: PTState) -> SteppingStoneResult:
    r"""The stepping-stone :math:`\log Z` from a batched :class:`~numpyro_ebm.sampling.tempering.PTState`.

    ``state`` is ``sample_chains(...).state`` of a :func:`~numpyro_ebm.parallel_tempering` run
    (leading axis: ``num_chains`` independent ensembles, the same ladder in all; reset the
    statistics after warmup with ``reset_stats`` or use :func:`~numpyro_ebm.tune_ladder`).

    :return: :class:`SteppingStoneResult`.
    """
    stats = state.stats
    if jnp.ndim(stats.num_steps) == 0:
        state = jax.tree.map(lambda a: a[None], state)
        stats = state.stats
    if jnp.ndim(stats.num_steps) != 1:
        raise ValueError(
            "stepping_stone: `state` must be one PTState or a batch with one leading chain axis "
            f"(sample_chains(...).state); got num_steps of shape {jnp.shape(stats.num_steps)}."
        )
    if is_concrete(state.betas):
        b = np.asarray(state.betas)
        if not np.allclose(b, b[:1]):
            raise ValueError("stepping_stone: the chains of `state` have different ladders (betas).")
        if int(np.min(np.asarray(stats.num_steps))) == 0:
            raise ValueError("stepping_stone: `state` has no accumulated steps (num_steps == 0).")
    n = stats.num_steps.astype(stats.log_ratio_up.dtype)
    m, log_r = _log_means(stats.log_ratio_up, n)
    _, log_r_rev = _log_means(stats.log_ratio_down, n)
    log_Z_base = jnp.reshape(state.log_Z_base, (-1,))[0]
    log_Z = log_Z_base + jnp.sum(log_r)
    num_chains = m.shape[0]
    u = jnp.sum(m / jnp.mean(m, axis=0) - 1.0, axis=-1)
    stderr = jnp.std(u, ddof=1) / jnp.sqrt(num_chains) if num_chains > 1 else jnp.asarray(jnp.nan)
    summary = tempering_summary(state)
    return SteppingStoneResult(
        log_Z, stderr, log_Z_base - jnp.sum(log_r_rev), log_r, summary.betas,
        summary.rejection_rates, summary.barrier, summary.round_trip_rate, state.position,
    )


def logz_stepping_stone(
    rng_key,
    target,
    base: Distribution | None = None,
    kernel: Callable | None = None,
    *,
    num_chains: int = 16,
    num_temperatures: int = 16,
    betas=None,
    num_steps: int = 1000,
    num_warmup_rounds: int = 4,
    num_warmup_steps: int = 250,
    num_local_steps: int = 1,
    schedule: str = "linear",
) -> SteppingStoneResult:
    r"""Estimate :math:`\log Z` by non-reversible parallel tempering and stepping stones.

    ``target``, ``base`` and ``kernel`` as in :func:`~numpyro_ebm.logz_ais` (:func:`energy_path`).
    Runs ``num_chains`` independent PT ensembles (chains started at base draws), adapts the ladder
    in ``num_warmup_rounds`` rounds of ``num_warmup_steps`` steps (:func:`~numpyro_ebm.tune_ladder`;
    0 rounds keeps ``betas``), then ``num_steps`` steps whose statistics give the estimate
    (:func:`stepping_stone`).

    :param int num_temperatures: ``K`` (``K + 1`` replicas) when ``betas`` is not given.
    :param str schedule: initial ladder, see :func:`~numpyro_ebm.temperature_schedule`.
    :return: :class:`SteppingStoneResult` (``log_Z``, ``stderr``, ``log_Z_reverse``, ...).

    **Example**

    .. code-block:: python

        ising = numpyro_ebm.models.Ising((4, 4))
        res = numpyro_ebm.logz_stepping_stone(jax.random.key(0), ising.annealing_path(params))
        res.log_Z, res.stderr
    """
    num_chains = check_int("num_chains", num_chains, 2)
    num_steps = check_int("num_steps", num_steps, 1)
    num_warmup_rounds = check_int("num_warmup_rounds", num_warmup_rounds, 0)
    path = energy_path(target, base, kernel, "logz_stepping_stone")
    check_path_kernel(path, 0.5, caller="logz_stepping_stone")
    if betas is None:
        betas = temperature_schedule(num_temperatures, schedule)
    betas = check_betas(betas)
    if isinstance(target, AnnealingPath) or (kernel is None and base is None):
        pt = parallel_tempering(path, betas=betas, num_local_steps=num_local_steps)
    else:  # the same program as the last call with these objects (no recompilation)
        energy = target.energy if isinstance(target, Unnormalized) else target
        pt = parallel_tempering(NegativeEnergy(energy), kernel, base=base, betas=betas,
                                num_local_steps=num_local_steps)
    init_key, warm_key, run_key = jax.random.split(rng_key, 3)
    x0 = path.sample_base(init_key, num_chains)
    state = None
    if num_warmup_rounds:
        state = tune_ladder(warm_key, pt, x0, num_warmup_rounds, num_warmup_steps)
    result = sample_chains(run_key, None, pt, x0, num_steps, init_state=state)
    return stepping_stone(result.state)


def _combine_runs(log_Z_base, log_weights, positions, betas) -> AISResult:
    """Unbiased estimates of Z / Z_0 combined as AIS weights: log of their mean, delta-method
    standard error, ESS."""
    n = log_weights.shape[0]
    finite = jnp.where(jnp.isnan(log_weights), -jnp.inf, log_weights)
    shift = jnp.max(finite)
    w = jnp.exp(finite - shift)
    mean_w = jnp.mean(w)
    sd = jnp.std(w, ddof=1) if n > 1 else jnp.asarray(jnp.nan, w.dtype)
    ess = jnp.sum(w) ** 2 / jnp.sum(w**2)
    return AISResult(log_Z_base + shift + jnp.log(mean_w), sd / (jnp.sqrt(n) * mean_w), log_weights,
                     ess, positions, betas)


def _check_linear(path: AnnealingPath, caller: str):
    """SMC reweights by :math:`\\delta\\,(f_1 - f_0)`: the path must be affine in beta."""
    x = path.sample_base(jax.random.key(0), 4)
    for j in range(4):
        xj = jax.tree.map(lambda a: a[j], x)
        f0, f1, fm = (path.logdensity_fn(b, xj) for b in (0.0, 1.0, 0.5))
        if not is_concrete((f0, f1, fm)):
            return
        if abs(float(fm) - 0.5 * (float(f0) + float(f1))) > 1e-4 * (1 + abs(float(fm))):
            raise ValueError(
                f"{caller}: the path is not geometric (f_beta is not affine in beta, e.g. an RBM's "
                "path, whose hidden units are tempered inside a softplus), which tempered SMC "
                "needs; use the geometric path of the energy (an energy `target` with a `base` "
                "and a kernel factory), or logz_ais / logz_stepping_stone."
            )


def logz_smc(
    rng_key,
    target,
    base: Distribution | None = None,
    kernel: Callable | None = None,
    *,
    num_particles: int = 1000,
    num_runs: int = 4,
    target_ess: float = 0.5,
    num_steps: int = 10,
    max_num_temperatures: int = 500,
) -> AISResult:
    r"""Estimate :math:`\log Z` by adaptive tempered SMC (BlackJAX ``adaptive_tempered_smc``).

    ``target``, ``base`` and ``kernel`` as in :func:`~numpyro_ebm.logz_ais`; the path must be
    geometric (affine in :math:`\beta`: ``geometric_path``, the Ising path; not the RBM's). Each of
    ``num_runs`` independent runs moves ``num_particles`` particles with ``num_steps``
    transitions of ``path.kernel(beta)`` per temperature and chooses the next temperature by the
    ESS of the incremental weights (``target_ess`` times ``num_particles``, systematic resampling).

    :return: an :class:`~numpyro_ebm.AISResult` whose ``log_weights`` are the runs'
        :math:`\log(\hat Z_r / Z_0)` (each :math:`\hat Z_r` is unbiased, so they combine like AIS
        weights: ``log_Z``, ``stderr`` by the delta method), ``ess`` their ESS, ``positions`` the
        final particles resampled to equal weights ``(num_runs * num_particles, ...)``, and
        ``betas`` the ``(num_runs, max_num_temperatures + 1)`` schedules, padded with 1.
    :raises RuntimeError: when a run does not reach :math:`\beta = 1` in
        ``max_num_temperatures`` temperatures.

    The compiled runner is cached per (``target``, ``base``, ``kernel``) and sizes, as in
    :func:`~numpyro_ebm.logz_ais`: values these read from an enclosing scope are frozen at the
    first call.

    **Example**

    .. code-block:: python

        energy = lambda x: 0.5 * jnp.sum(x**2) / 0.5**2        # log Z = log(2 pi 0.25)
        base = dist.Normal(0.0, 2.0).expand([2]).to_event(1)
        res = numpyro_ebm.logz_smc(jax.random.key(0), energy, base,
                                   functools.partial(blackjax.mala, step_size=0.2))
        res.log_Z, res.stderr
    """
    num_particles = check_int("num_particles", num_particles, 2)
    num_runs = check_int("num_runs", num_runs, 1)
    num_steps = check_int("num_steps", num_steps, 1)
    max_num_temperatures = check_int("max_num_temperatures", max_num_temperatures, 1)
    target_ess = check_float("target_ess", target_ess, minimum=0.0, maximum=1.0, positive=True)
    path = energy_path(target, base, kernel, "logz_smc")
    check_path_kernel(path, 0.5, caller="logz_smc")
    _check_linear(path, "logz_smc")
    cache_key = (_target_key(target, base, kernel), num_particles, num_runs, num_steps,
                 target_ess, max_num_temperatures)
    runner = _SMC_CACHE.get(cache_key)
    if runner is None:
        runner = _smc_runner(path, num_particles, num_steps, target_ess, max_num_temperatures)
        _SMC_CACHE[cache_key] = runner
        while len(_SMC_CACHE) > 16:
            _SMC_CACHE.pop(next(iter(_SMC_CACHE)))
    log_z, reached, schedule, particles = runner(jax.random.split(rng_key, num_runs))
    if is_concrete(reached) and float(np.min(np.asarray(reached))) < 1.0:
        raise RuntimeError(
            f"logz_smc: a run stopped at beta={float(np.min(np.asarray(reached))):.4g} after "
            f"max_num_temperatures={max_num_temperatures} temperatures; raise it, or lower "
            "target_ess."
        )
    positions = jax.tree.map(lambda a: jnp.reshape(a, (-1,) + a.shape[2:]), particles)
    leading_size("positions", positions)
    return _combine_runs(jnp.asarray(path.log_Z_base, log_z.dtype), log_z, positions, schedule)


#: compiled SMC runners by (target, base, kernel, sizes), as logz_ais caches its programs.
_SMC_CACHE: dict = {}


def _target_key(target, base, kernel):
    if isinstance(target, Unnormalized) and base is None and kernel is None:
        target = target.annealing_path
    if isinstance(target, AnnealingPath):
        target = (target.logdensity_fn, target.kernel, target.sample_base)
    key = (target, base, kernel)
    try:
        hash(key)
    except TypeError:
        return object()
    return key


def _smc_runner(path, num_particles, num_steps, target_ess, max_num_temperatures):
    """``jit(vmap(one SMC run))`` over run keys: ``(log Z - log Z_0, final beta, schedule,
    resampled particles)``."""
    import blackjax
    from blackjax.smc import resampling
    from blackjax.smc.base import SMCState
    from blackjax.smc.base import step as smc_step

    f = path.logdensity_fn

    def logprior_fn(x):
        return f(0.0, x)

    def loglikelihood_fn(x):
        return f(1.0, x) - f(0.0, x)

    def update_particles(rng_key, state, num_mcmc_steps, mcmc_parameters, logposterior_fn,
                         log_weights_fn):
        algorithm = path.kernel(state.tempering_param)

        def move(key, x):
            init_key, step_key = jax.random.split(key)
            s = algorithm.init(x, init_key)
            s, _ = jax.lax.scan(lambda s, k: (algorithm.step(k, s)[0], None), s,
                                jax.random.split(step_key, num_mcmc_steps))
            return s.position

        def update_fn(keys, particles, update_parameters):
            return jax.vmap(move)(keys, particles), None

        return smc_step(rng_key, SMCState(state.particles, state.weights, {}), update_fn,
                        jax.vmap(log_weights_fn), resampling.systematic)

    smc = blackjax.adaptive_tempered_smc(
        logprior_fn, loglikelihood_fn, None, None, {}, resampling.systematic, target_ess,
        num_mcmc_steps=num_steps, update_particles_fn=update_particles,
    )

    def one_run(key):
        init_key, run_key, final_key = jax.random.split(key, 3)
        state = smc.init(path.sample_base(init_key, num_particles))
        state = state._replace(tempering_param=jnp.zeros((), state.weights.dtype))
        schedule = jnp.ones((max_num_temperatures + 1,), state.weights.dtype).at[0].set(0.0)

        def cond(carry):
            state, _, t, _ = carry
            return (state.tempering_param < 1.0) & (t < max_num_temperatures)

        def body(carry):
            state, log_z, t, schedule = carry
            state, info = smc.step(jax.random.fold_in(run_key, t), state)
            return (state, log_z + info.log_likelihood_increment, t + 1,
                    schedule.at[t + 1].set(state.tempering_param))

        init = (state, jnp.zeros((), state.weights.dtype), jnp.zeros((), jnp.int32), schedule)
        state, log_z, t, schedule = jax.lax.while_loop(cond, body, init)
        idx = resampling.systematic(final_key, state.weights, num_particles)
        particles = jax.tree.map(lambda a: a[idx], state.particles)
        return log_z, state.tempering_param, schedule, particles

    return jax.jit(jax.vmap(one_run))
