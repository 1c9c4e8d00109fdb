# Over ~400 lines on purpose: one algorithm (parallel tempering) with its state, its ladder
# adaptation and its summary, which read the same state fields and belong together.
r"""Parallel tempering (replica exchange) as a BlackJAX ``SamplingAlgorithm``, non-reversible.

One replica per inverse temperature :math:`0 = \beta_0 < \beta_1 < \dots < \beta_K = 1` of a path

.. math::

    \log \pi_\beta(x) = f_\beta(x) = (1-\beta)\log p_0(x) + \beta \log p(x)
                      = \log p_0(x) + \beta\,\ell(x),\qquad \ell = \log p - \log p_0,

(or any :class:`~numpyro_ebm.AnnealingPath`, e.g. ``model.annealing_path(params)``: the exact
block-Gibbs kernels of the Ising model and the RBM at every :math:`\beta`). One step is

1. *local exploration*: replica :math:`k \ge 1` takes ``num_local_steps`` transitions of the
   kernel built for :math:`f_{\beta_k}`; replica 0 is redrawn exactly from the base :math:`p_0`;
2. *communication*: the neighbours :math:`(k, k+1)` of one parity swap their states with
   probability

   .. math::

       \alpha_k = \min\Big(1, \exp\big(f_{\beta_k}(x_{k+1}) + f_{\beta_{k+1}}(x_k)
                   - f_{\beta_k}(x_k) - f_{\beta_{k+1}}(x_{k+1})\big)\Big)

   (:math:`= \min(1, e^{(\beta_{k+1}-\beta_k)(\ell(x_k) - \ell(x_{k+1}))})` on the geometric
   path). The parity alternates deterministically, even pairs on even steps and odd pairs on odd
   steps: the non-reversible *DEO* scheme (Syed, Bouchard-Côté, Deligiannidis and Doucet 2022,
   the NRPT of Pigeons.jl), under which a replica keeps travelling in one direction along the
   ladder while its swaps succeed. ``scheme="seo"`` draws the parity at random (reversible PT).

Each step leaves :math:`\prod_k \pi_{\beta_k}` invariant; the state's ``position`` is the
:math:`\beta = 1` replica, so :func:`~numpyro_ebm.sample_chains`, ``numpyro.infer.MCMC`` (via
:class:`~numpyro_ebm.BlackJAXKernel`) and PCD see target draws.

**Index process and diagnostics.** ``state.index[k]`` is the label of the replica at slot
:math:`k`. A *round trip* is a label going from slot 0 to slot :math:`K` and back to 0. The state
accumulates the mean swap acceptance :math:`1 - r_k` of every pair (Rao-Blackwellized: every pair
every step) and the number of round trips. The global communication barrier is
:math:`\Lambda \approx \sum_k r_k`; with the ladder that equalizes the :math:`r_k`
(:func:`adapt_ladder`), NRPT's round-trip rate approaches :math:`1/(2 + 2\Lambda)`, and
:math:`K \approx 2\Lambda`-:math:`4\Lambda` replicas are enough (more do not hurt NRPT).
:func:`tempering_summary` reads all of it from a (batched) state.

**log Z.** The state also accumulates :math:`\log\sum_t e^{f_{\beta_{k+1}}(x_k^t) -
f_{\beta_k}(x_k^t)}` per pair, the stepping stones read by
:func:`numpyro_ebm.evaluation.tempering.stepping_stone`.

**Example**

.. code-block:: python

    mu = jnp.array([6.0, 0.0])     # two unit Gaussians 12 sd apart, weights 0.3 / 0.7
    log_p = lambda x: jnp.logaddexp(jnp.log(0.3) - 0.5 * jnp.sum((x - mu) ** 2),
                                    jnp.log(0.7) - 0.5 * jnp.sum((x + mu) ** 2))
    pt = numpyro_ebm.parallel_tempering(log_p, functools.partial(blackjax.mala, step_size=0.8),
                                        num_temperatures=10)
    start = jnp.tile(mu, (32, 1))
    warm = numpyro_ebm.tune_ladder(jax.random.key(0), pt, start, num_rounds=4, num_steps=200)
    result = numpyro_ebm.sample_chains(jax.random.key(1), None, pt, start, num_steps=2000,
                                       num_samples=1000, init_state=warm)
    (result.samples[..., 0] > 0).mean()                       # ~0.3
    numpyro_ebm.tempering_summary(result.state).round_trip_rate
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.base import SamplingAlgorithm
from numpyro.distributions import Distribution

from numpyro_ebm._validation import check_float, check_int, is_concrete, leading_size
from numpyro_ebm.sampling.annealing import AnnealingPath
from numpyro_ebm.sampling.chains import build_algorithm, sample_chains

__all__ = [
    "PTInfo",
    "PTState",
    "PTStats",
    "TemperingSummary",
    "adapt_ladder",
    "tempered_logdensity",
    "ladder_from_rejection",
    "parallel_tempering",
    "reset_stats",
    "swap_log_acceptance",
    "swap_permutation",
    "tempering_summary",
    "tune_ladder",
]


class PTStats(NamedTuple):
    """Running sums of a :func:`parallel_tempering` state, since its last :func:`reset_stats`.

    :ivar num_steps: ``()`` int32, steps accumulated.
    :ivar swap_acceptance: ``(K,)`` sum over steps of the swap acceptance probability
        :math:`\\alpha_k` of every neighbour pair (attempted or not).
    :ivar log_ratio_up: ``(K,)`` :math:`\\log \\sum_t \\exp(f_{\\beta_{k+1}}(x_k^t) -
        f_{\\beta_k}(x_k^t))` (forward stepping stones).
    :ivar log_ratio_down: ``(K,)`` :math:`\\log \\sum_t \\exp(f_{\\beta_k}(x_{k+1}^t) -
        f_{\\beta_{k+1}}(x_{k+1}^t))` (reverse stepping stones).
    :ivar round_trips: ``()`` int32, completed round trips 0 -> K -> 0 of the replica labels.
    """

    num_steps: Any
    swap_acceptance: Any
    log_ratio_up: Any
    log_ratio_down: Any
    round_trips: Any


class PTState(NamedTuple):
    """State of :func:`parallel_tempering` for one ensemble (``sample_chains`` adds a chain axis).

    :ivar position: the :math:`\\beta = 1` replica's position (what samplers and users read).
    :ivar logdensity: :math:`f_1` at ``position`` (the target's log density, up to a constant).
    :ivar replicas: positions of all replicas, leading axis ``K + 1`` (slot ``k`` at ``betas[k]``).
    :ivar betas: ``(K + 1,)`` the ladder, from 0 to 1 (in the state, so :func:`adapt_ladder`
        changes it without rebuilding the algorithm).
    :ivar index: ``(K + 1,)`` int32, the label of the replica at each slot (the index process).
    :ivar direction: ``(K + 1,)`` int32 per label: 0 not yet at an end, 1 last end was slot 0
        (going up), 2 reached slot ``K`` after slot 0 (going down).
    :ivar step: ``()`` int32 step counter (its parity picks the swapped pairs).
    :ivar log_Z_base: ``()`` :math:`\\log Z_0` of the path's base.
    :ivar stats: :class:`PTStats`.
    """

    position: Any
    logdensity: Any
    replicas: Any
    betas: Any
    index: Any
    direction: Any
    step: Any
    log_Z_base: Any
    stats: PTStats


class PTInfo(NamedTuple):
    """Info of one :func:`parallel_tempering` step.

    :ivar acceptance_rate: ``()`` local acceptance rate of the :math:`\\beta = 1` replica (NaN
        for kernels that report none).
    :ivar local_acceptance: ``(K + 1,)`` local acceptance rate per slot (1 at slot 0: exact draws).
    :ivar swap_acceptance: ``(K,)`` swap acceptance probability :math:`\\alpha_k` of every pair.
    :ivar is_swapped: ``(K,)`` bool, the pairs that swapped this step.
    """

    acceptance_rate: Any
    local_acceptance: Any
    swap_acceptance: Any
    is_swapped: Any


class _Ladder(NamedTuple):
    """What a PT step needs from the path: ``f(beta, x)``, a kernel per beta, exact base draws,
    and for geometric paths ``split(x) -> (log p0(x), ell(x))`` (then ``f`` is affine in beta)."""

    f: Callable
    kernel_at: Callable  # (beta, kwargs) -> SamplingAlgorithm
    sample_base: Callable  # (rng_key, like_position) -> position
    split: Callable | None
    log_Z_base: Any


def tempered_logdensity(beta, log_p0, log_p):
    r""":math:`(1-\beta)\log p_0 + \beta \log p`, exactly :math:`\log p_0` at :math:`\beta = 0`
    and :math:`\log p` at :math:`\beta = 1` (no ``0 * inf``: a base with bounded support
    does not make the target's log density NaN)."""
    mid = (1.0 - beta) * log_p0 + beta * log_p
    return jnp.where(beta >= 1.0, log_p, jnp.where(beta <= 0.0, log_p0, mid))


def _gaussian_base(scale):
    def log_prob(x):
        leaves = jax.tree.leaves(x)
        return sum(
            jnp.sum(-0.5 * jnp.square(a / scale) - jnp.log(scale) - 0.5 * jnp.log(2 * jnp.pi))
            for a in leaves
        )

    def sample(rng_key, like):
        leaves, treedef = jax.tree.flatten(like)
        keys = jax.random.split(rng_key, len(leaves))
        return jax.tree.unflatten(
            treedef,
            [scale * jax.random.normal(k, jnp.shape(a), jnp.result_type(a, float))
             for k, a in zip(keys, leaves)],
        )

    return log_prob, sample


def _ladder(logdensity_fn, kernel, base, base_scale, kernel_kwargs) -> _Ladder:
    from numpyro_ebm.distribution import Unnormalized

    path = None
    if isinstance(logdensity_fn, AnnealingPath):
        path = logdensity_fn
    elif isinstance(logdensity_fn, Unnormalized) and kernel is None:
        path = logdensity_fn.annealing_path
        if path is None:
            raise ValueError(
                "parallel_tempering: this Unnormalized distribution has no annealing path of its "
                "own; pass `kernel` (a factory `logdensity_fn -> SamplingAlgorithm`)."
            )
    if path is not None:
        if kernel is not None or base is not None or kernel_kwargs:
            raise ValueError(
                "parallel_tempering: an AnnealingPath brings its own base and kernels; leave "
                "`kernel`, `base` and `kernel_kwargs` as None."
            )

        def sample_base(rng_key, like):
            draw = path.sample_base(rng_key, 1)
            return jax.tree.map(lambda a, b: a[0].astype(jnp.result_type(b)), draw, like)

        return _Ladder(path.logdensity_fn, lambda beta, kw: path.kernel(beta), sample_base, None,
                       path.log_Z_base)
    if isinstance(logdensity_fn, Unnormalized):
        energy = logdensity_fn.energy
        logdensity_fn = lambda x: -energy(x)  # noqa: E731
    if not callable(logdensity_fn):
        raise TypeError(
            "parallel_tempering: `logdensity_fn` must be a function x -> log p(x), an "
            f"AnnealingPath or an Unnormalized distribution; got {logdensity_fn!r}."
        )
    if kernel is None:
        raise TypeError(
            "parallel_tempering: `kernel` is None; pass a factory `logdensity_fn -> "
            "SamplingAlgorithm` (e.g. `functools.partial(blackjax.mala, step_size=0.1)`), or an "
            "AnnealingPath (`model.annealing_path(params)`) as `logdensity_fn`."
        )
    if base is None:
        base_scale = check_float("base_scale", base_scale, positive=True)
        log_p0, sample = _gaussian_base(base_scale)
    elif isinstance(base, Distribution):
        if tuple(base.batch_shape) != ():
            raise ValueError(
                f"`base` must describe one position (batch_shape ()), got batch_shape "
                f"{tuple(base.batch_shape)}: use `.to_event({len(base.batch_shape)})`."
            )
        log_p0 = base.log_prob

        def sample(rng_key, like):
            return jax.tree.map(lambda a, b: a.astype(jnp.result_type(b)), base.sample(rng_key), like)
    else:
        raise TypeError(
            "`base` must be None (a Gaussian of sd `base_scale`) or a normalized NumPyro "
            f"distribution with sample and log_prob; got {base!r}."
        )

    def f(beta, x):
        return tempered_logdensity(beta, log_p0(x), logdensity_fn(x))

    def split(x):
        return log_p0(x), logdensity_fn(x)

    def kernel_at(beta, kw):
        if not kw:
            return build_algorithm(kernel, lambda x: f(beta, x))
        return build_algorithm(lambda fn: kernel(fn, **kw), lambda x: f(beta, x))

    kernel_at(1.0, {k: v[-1] for k, v in kernel_kwargs.items()})  # fail now on a non-factory
    return _Ladder(f, kernel_at, sample, split, jnp.zeros(()))


def parallel_tempering(
    logdensity_fn,
    kernel: Callable | None = None,
    *,
    base: Distribution | None = None,
    base_scale: float = 10.0,
    betas=None,
    num_temperatures: int = 8,
    schedule: str = "linear",
    num_local_steps: int = 1,
    scheme: str = "deo",
    kernel_kwargs: dict | None = None,
) -> SamplingAlgorithm:
    r"""Non-reversible parallel tempering as a ``blackjax.SamplingAlgorithm`` (see the module doc).

    :param logdensity_fn: :math:`\log p(x)` up to a constant, for one position (any pytree); or an
        :class:`~numpyro_ebm.AnnealingPath` (e.g. ``ising.annealing_path(params)``: its exact
        kernels at every :math:`\beta`, its own base); or an ``Unnormalized`` distribution
        (its own path when ``kernel`` is None, else its energy).
    :param kernel: a factory ``logdensity_fn -> blackjax.SamplingAlgorithm`` (MALA, HMC, ULA,
        ``numpyro_ebm.gibbs``, ...), built for each :math:`f_{\beta_k}`. ``None`` with a path.
    :param base: the normalized reference :math:`p_0` (``sample`` and ``log_prob`` over one
        position), sampled exactly at :math:`\beta = 0`; default an isotropic Gaussian of sd
        ``base_scale`` over every leaf of the position. It should cover the target's modes.
    :param float base_scale: sd of the default base.
    :param betas: ``(K + 1,)`` ladder from 0 to 1; default
        ``temperature_schedule(num_temperatures, schedule)``. Tune it with :func:`tune_ladder`.
    :param int num_temperatures: ``K`` (``K + 1`` replicas), when ``betas`` is not given.
    :param str schedule: ``"linear"`` (default, as Pigeons.jl), ``"sigmoid"`` or ``"geometric"``.
    :param int num_local_steps: kernel transitions per replica per step.
    :param str scheme: ``"deo"`` (deterministic even-odd, non-reversible; default) or ``"seo"``
        (stochastic even-odd, reversible).
    :param dict kernel_kwargs: per-slot keyword arguments of the factory, ``{name: (K + 1,)
        array}``, e.g. ``{"step_size": jnp.geomspace(2.0, 0.3, K + 1)}`` (indexed by slot, not
        by :math:`\beta`).
    :return: ``SamplingAlgorithm(init, step)``; ``init(position, rng_key=None)`` puts every replica
        at ``position``; ``step(rng_key, state) -> (PTState, PTInfo)``.

    Cost per step: ``K`` times (``num_local_steps`` kernel steps + one kernel init) + 3 log-density
    evaluations per replica (one on the geometric path).
    """
    from numpyro_ebm.evaluation.ais import check_betas, temperature_schedule

    if betas is None:
        betas = temperature_schedule(num_temperatures, schedule)
    betas = check_betas(betas)
    if is_concrete(betas) and not np.all(np.diff(np.asarray(betas)) > 0):
        raise ValueError("`betas` must be strictly increasing for parallel tempering.")
    num_local_steps = check_int("num_local_steps", num_local_steps, 1)
    if scheme not in ("deo", "seo"):
        raise ValueError(f"`scheme` must be 'deo' or 'seo', got {scheme!r}.")
    num_slots = betas.shape[0]
    kw = {}
    for name, value in (kernel_kwargs or {}).items():
        value = jnp.asarray(value)
        if value.shape != (num_slots,):
            raise ValueError(
                f"`kernel_kwargs`[{name!r}] must have shape (K + 1,) = ({num_slots},), one value "
                f"per slot; got {value.shape}."
            )
        kw[name] = value
    ladder = _ladder(logdensity_fn, kernel, base, base_scale, kw)
    K = num_slots - 1
    cache_key = _step_cache_key(logdensity_fn, kernel, base, base_scale,
                                (num_slots, num_local_steps, scheme), kw)

    def f_at(beta_self, beta_up, beta_down, x):
        if ladder.split is not None:
            lp0, lp = ladder.split(x)
            return tuple(tempered_logdensity(b, lp0, lp) for b in (beta_self, beta_up, beta_down))
        return ladder.f(beta_self, x), ladder.f(beta_up, x), ladder.f(beta_down, x)

    def init(position, rng_key=None):
        del rng_key
        replicas = jax.tree.map(lambda a: jnp.broadcast_to(a, (num_slots,) + jnp.shape(a)), position)
        logdensity = ladder.f(betas[-1], position)
        dtype = jnp.result_type(logdensity, float)
        stats = PTStats(
            jnp.zeros((), jnp.int32), jnp.zeros((K,), dtype), jnp.full((K,), -jnp.inf, dtype),
            jnp.full((K,), -jnp.inf, dtype), jnp.zeros((), jnp.int32),
        )
        return PTState(
            position, logdensity, replicas, betas.astype(dtype), jnp.arange(num_slots, dtype=jnp.int32),
            jnp.zeros((num_slots,), jnp.int32).at[0].set(1), jnp.zeros((), jnp.int32),
            jnp.asarray(ladder.log_Z_base, dtype), stats,
        )

    def explore(rng_key, beta, kwargs, x):
        algorithm = ladder.kernel_at(beta, kwargs)
        init_key, step_key = jax.random.split(rng_key)
        state = algorithm.init(x, init_key)

        def one(carry, key):
            state, acc = carry
            state, info = algorithm.step(key, state)
            rate = getattr(info, "acceptance_rate", None)
            rate = jnp.nan if rate is None else jnp.mean(rate)
            return (state, acc + rate), None

        (state, acc), _ = jax.lax.scan(
            one, (state, jnp.zeros((), jnp.float32)), jax.random.split(step_key, num_local_steps))
        return state.position, acc / num_local_steps

    def step(rng_key, state: PTState):
        b = state.betas
        base_key, local_key, swap_key, parity_key = jax.random.split(rng_key, 4)
        hot = jax.tree.map(lambda a: a[1:], state.replicas)
        kw_hot = {k: v[1:] for k, v in kw.items()}
        moved, local_acc = jax.vmap(explore)(jax.random.split(local_key, K), b[1:], kw_hot, hot)
        like = jax.tree.map(lambda a: a[0], state.replicas)
        x0 = ladder.sample_base(base_key, like)
        replicas = jax.tree.map(lambda a, c: jnp.concatenate([a[None], c]), x0, moved)
        local_acc = jnp.concatenate([jnp.ones((1,), local_acc.dtype), local_acc])

        b_up = jnp.concatenate([b[1:], b[-1:]])
        b_down = jnp.concatenate([b[:1], b[:-1]])
        f_self, f_up, f_down = jax.vmap(f_at)(b, b_up, b_down, replicas)
        up = f_up[:-1] - f_self[:-1]  # f_{k+1}(x_k) - f_k(x_k)
        down = f_down[1:] - f_self[1:]  # f_k(x_{k+1}) - f_{k+1}(x_{k+1})
        log_alpha = swap_log_acceptance(f_self, f_up, f_down)
        alpha = jnp.exp(jnp.minimum(log_alpha, 0.0))
        if scheme == "deo":
            parity = state.step % 2
        else:
            parity = jax.random.bernoulli(parity_key).astype(jnp.int32)
        attempted = (jnp.arange(K) % 2) == parity
        u = jax.random.uniform(swap_key, (K,), alpha.dtype)
        swapped = attempted & (jnp.log(u) < log_alpha)
        perm = swap_permutation(swapped)
        replicas = jax.tree.map(lambda a: a[perm], replicas)
        index = state.index[perm]
        logdensity = jnp.where(swapped[-1], f_up[-2], f_self[-1])

        # round trips of the labels: 0 -> K -> 0
        direction = state.direction
        bottom, top = index[0], index[-1]
        completed = direction[bottom] == 2
        direction = direction.at[bottom].set(1)
        direction = direction.at[top].set(jnp.where(direction[top] == 1, 2, direction[top]))

        s = state.stats
        stats = PTStats(
            s.num_steps + 1,
            s.swap_acceptance + alpha,
            jnp.logaddexp(s.log_ratio_up, up),
            jnp.logaddexp(s.log_ratio_down, down),
            s.round_trips + completed.astype(jnp.int32),
        )
        new = PTState(
            jax.tree.map(lambda a: a[-1], replicas), logdensity, replicas, b, index, direction,
            state.step + 1, state.log_Z_base, stats,
        )
        return new, PTInfo(local_acc[-1], local_acc, alpha, swapped)

    if cache_key is not None:
        step = _STEP_CACHE.setdefault(cache_key, step)
        while len(_STEP_CACHE) > _STEP_CACHE_SIZE:
            _STEP_CACHE.pop(next(iter(_STEP_CACHE)))
    return SamplingAlgorithm(init, step)


#: ``step`` functions by what fixes them (the user's objects and the sizes; not ``betas``, which
#: live in the state), so that a new ``parallel_tempering(...)`` with the same objects reuses the
#: program ``sample_chains`` compiled for the previous one.
_STEP_CACHE: dict = {}
_STEP_CACHE_SIZE = 32


def _step_cache_key(logdensity_fn, kernel, base, base_scale, sizes, kw):
    from numpyro_ebm.distribution import Unnormalized

    if kw:
        return None
    target = logdensity_fn
    if isinstance(target, Unnormalized) and kernel is None:
        target = target.annealing_path
    if isinstance(target, AnnealingPath):  # log_Z_base only enters init
        target = (target.logdensity_fn, target.kernel, target.sample_base)
    key = (target, kernel, base, float(base_scale), sizes)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def swap_log_acceptance(f_self, f_up, f_down):
    r"""``(K,)`` log swap acceptance ratios of the neighbour pairs :math:`(k, k+1)`.

    :math:`\log \alpha_k = f_{\beta_k}(x_{k+1}) + f_{\beta_{k+1}}(x_k) - f_{\beta_k}(x_k) -
    f_{\beta_{k+1}}(x_{k+1})` (not clipped at 0; NaN becomes :math:`-\infty`).

    :param f_self: ``(K + 1,)`` :math:`f_{\beta_j}(x_j)`.
    :param f_up: ``(K + 1,)`` :math:`f_{\beta_{j+1}}(x_j)` (last entry unused).
    :param f_down: ``(K + 1,)`` :math:`f_{\beta_{j-1}}(x_j)` (first entry unused).
    """
    log_alpha = (f_up[:-1] - f_self[:-1]) + (f_down[1:] - f_self[1:])
    return jnp.nan_to_num(log_alpha, nan=-jnp.inf)


def swap_permutation(swapped):
    """``(K + 1,)`` int: the slot each slot takes its replica from, given the ``(K,)`` bool mask of
    the pairs ``(k, k+1)`` that swap (pairs must be disjoint: one parity). Apply it as
    ``replicas[perm]``."""
    swapped = jnp.asarray(swapped, bool)
    left = jnp.concatenate([swapped, jnp.zeros((1,), bool)])  # slot j swaps with j + 1
    right = jnp.concatenate([jnp.zeros((1,), bool), swapped])  # slot j swaps with j - 1
    slots = jnp.arange(swapped.shape[0] + 1)
    return jnp.where(left, slots + 1, jnp.where(right, slots - 1, slots))


def reset_stats(state: PTState) -> PTState:
    """``state`` with its :class:`PTStats` zeroed and the round-trip tracking restarted (batched
    states too): call after warmup, before the steps whose statistics you read."""
    s = state.stats
    stats = PTStats(
        jnp.zeros_like(s.num_steps), jnp.zeros_like(s.swap_acceptance),
        jnp.full_like(s.log_ratio_up, -jnp.inf), jnp.full_like(s.log_ratio_down, -jnp.inf),
        jnp.zeros_like(s.round_trips),
    )
    at_bottom = state.index[..., :1] == jnp.arange(state.index.shape[-1])
    return state._replace(stats=stats, direction=at_bottom.astype(state.direction.dtype))


def ladder_from_rejection(betas, rejection_rates, min_rate: float = 1e-4):
    r"""The ladder with (approximately) equal rejection rates, from measured per-pair rates.

    The communication barrier :math:`\Lambda(\beta)` is taken piecewise linear through
    :math:`(\beta_k, \sum_{j<k} r_j)` (Syed et al. 2022, Pigeons.jl); the new ladder is
    :math:`\beta'_i = \Lambda^{-1}(i\,\Lambda(1)/K)`, so that every pair carries
    :math:`\Lambda/K`. Rates are floored at ``min_rate`` so :math:`\Lambda` is invertible.

    :param betas: ``(K + 1,)`` current ladder.
    :param rejection_rates: ``(K,)`` measured :math:`r_k = 1 - \bar\alpha_k`.
    :return: ``(K + 1,)`` new ladder, 0 to 1, strictly increasing.
    """
    betas = jnp.asarray(betas)
    r = jnp.maximum(jnp.nan_to_num(jnp.asarray(rejection_rates, betas.dtype), nan=1.0), min_rate)
    cum = jnp.concatenate([jnp.zeros((1,), betas.dtype), jnp.cumsum(r)])
    targets = jnp.linspace(0.0, cum[-1], betas.shape[0]).astype(betas.dtype)
    new = jnp.interp(targets, cum, betas)
    return new.at[0].set(0.0).at[-1].set(1.0)


def adapt_ladder(state: PTState) -> PTState:
    """One ladder adaptation (a warmup round's end): new ``betas`` from the rejection rates
    measured since the last reset, pooled over every leading (chain) axis of a batched state, the
    same ladder for every chain; statistics reset (:func:`reset_stats`)."""
    if int(np.max(np.asarray(state.stats.num_steps))) == 0:
        raise ValueError("adapt_ladder: the state has no swap statistics yet; run some steps first.")
    n = jnp.maximum(state.stats.num_steps, 1)[..., None]
    rates = state.stats.swap_acceptance / n
    K = rates.shape[-1]
    mean_rate = jnp.mean(jnp.reshape(rates, (-1, K)), axis=0)
    betas = jnp.reshape(state.betas, (-1, K + 1))[0]
    new = ladder_from_rejection(betas, 1.0 - mean_rate)
    return reset_stats(state._replace(betas=jnp.broadcast_to(new, state.betas.shape)))


class TemperingSummary(NamedTuple):
    r"""What :func:`tempering_summary` reports, pooled over chains.

    :ivar betas: ``(K + 1,)`` the ladder.
    :ivar swap_rates: ``(K,)`` mean swap acceptance per pair.
    :ivar rejection_rates: ``(K,)`` :math:`r_k = 1 -` ``swap_rates``.
    :ivar barrier: :math:`\Lambda \approx \sum_k r_k`, the global communication barrier.
    :ivar round_trips: total round trips (all chains).
    :ivar round_trip_rate: round trips per step per ensemble; NRPT's optimum is
        :math:`1/(2 + 2\Lambda)`.
    :ivar num_steps: steps accumulated per ensemble.
    """

    betas: Any
    swap_rates: Any
    rejection_rates: Any
    barrier: Any
    round_trips: Any
    round_trip_rate: Any
    num_steps: Any


def tempering_summary(state: PTState) -> TemperingSummary:
    """Swap rates, barrier and round-trip rate of a (batched) :class:`PTState`, since the last
    :func:`reset_stats` (e.g. ``tempering_summary(result.state)`` after ``sample_chains``)."""
    n = jnp.maximum(state.stats.num_steps, 1)
    K = state.stats.swap_acceptance.shape[-1]
    rates = jnp.reshape(state.stats.swap_acceptance / n[..., None], (-1, K))
    swap_rates = jnp.mean(rates, axis=0)
    rejection = 1.0 - swap_rates
    round_trips = jnp.sum(state.stats.round_trips)
    total = jnp.sum(n)
    betas = jnp.reshape(state.betas, (-1, K + 1))[0]
    return TemperingSummary(betas, swap_rates, rejection, jnp.sum(rejection), round_trips,
                            round_trips / total, jnp.max(state.stats.num_steps))


def tune_ladder(
    rng_key, algorithm: SamplingAlgorithm, init_positions, num_rounds: int = 5,
    num_steps: int = 100, init_state=None,
):
    """Warm up parallel tempering and adapt its ladder: ``num_rounds`` rounds of ``num_steps``
    steps of ``num_chains`` ensembles (:func:`~numpyro_ebm.sample_chains` with the built
    ``algorithm``), each followed by :func:`adapt_ladder`. Returns the batched :class:`PTState`
    to pass as ``init_state`` to ``sample_chains`` (statistics reset, tuned ladder in it).

    :param rng_key: a JAX key.
    :param algorithm: ``parallel_tempering(...)``.
    :param init_positions: ``(num_chains, *event_shape)`` starting positions.
    :param int num_rounds: adaptation rounds (``>= 1``).
    :param int num_steps: PT steps per round (the same each round: one compiled program).
    :param init_state: optional batched state to continue from.

    Runs eagerly (a Python loop over rounds; each round is one compiled ``sample_chains``
    program, the same for every round), like :func:`adapt_ladder`, which reads the statistics on
    the host.
    """
    num_rounds = check_int("num_rounds", num_rounds, 1)
    num_steps = check_int("num_steps", num_steps, 1)
    leading_size("init_positions", init_positions)
    state = init_state
    for r in range(num_rounds):
        result = sample_chains(jax.random.fold_in(rng_key, r), None, algorithm, init_positions,
                               num_steps, init_state=state)
        state = adapt_ladder(result.state)
    return state
