r"""Run any BlackJAX kernel over many chains at once: ``vmap`` over chains, ``lax.scan`` over steps."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.base import SamplingAlgorithm
from jax.sharding import NamedSharding, PartitionSpec
from numpyro.distributions import Distribution

from numpyro_ebm._validation import (
    check_finite,
    check_int,
    check_rng_key,
    is_concrete,
    leading_size,
)

__all__ = [
    "ChainResult",
    "RunningMoments",
    "pool_moments",
    "bind_algorithm",
    "build_algorithm",
    "is_algorithm",
    "logdensity_of",
    "resolve_algorithm",
    "sample_chains",
]


class RunningMoments(NamedTuple):
    r"""Running mean and variance of an observable, accumulated inside the scan (Welford).

    For observations :math:`f_1, \dots, f_n` of one chain,
    :math:`\bar f_n = \bar f_{n-1} + (f_n - \bar f_{n-1}) / n` and
    :math:`M_n = M_{n-1} + (f_n - \bar f_{n-1})(f_n - \bar f_n)`; the variance is
    :math:`M_n / (n - 1)`. Memory is that of one observation per chain, whatever ``n``.

    :ivar count: number of observations per chain (a scalar: every chain has the same).
    :ivar mean: pytree like ``observables(position)`` with a leading chain axis.
    :ivar m2: the sums of squared deviations :math:`M_n`, same shapes as ``mean``.
    """

    count: jax.Array
    mean: Any
    m2: Any

    @property
    def variance(self):
        """Per-chain sample variance :math:`M_n / (n - 1)` (NaN for ``n < 2``)."""
        return jax.tree.map(lambda m2: m2 / (self.count - 1.0), self.m2)


def pool_moments(moments: RunningMoments, axis: int = 0) -> RunningMoments:
    r"""Pool per-chain :class:`RunningMoments` over the chain ``axis`` (Chan et al.'s parallel
    combination): the mean and variance of every observation of every chain, as if one long run.

    ``mean = mean over chains``; ``M = sum_c M_c + n * sum_c (mean_c - mean)^2``; the returned
    ``count`` is ``n * num_chains``. The standard error of a pooled mean of independent chains is
    ``sqrt(var(chain means) / num_chains)`` (``moments.mean.std(0) / sqrt(C)``), not
    ``sqrt(variance / count)``, when the observations of one chain are correlated.
    """

    def pool(mean, m2):
        num_chains = mean.shape[axis]
        grand = jnp.mean(mean, axis=axis)
        spread = jnp.sum((mean - jnp.expand_dims(grand, axis)) ** 2, axis=axis)
        return grand, jnp.sum(m2, axis=axis) + moments.count * spread, num_chains

    pooled = jax.tree.map(pool, moments.mean, moments.m2)
    leaves = jax.tree.leaves(moments.mean)
    num_chains = leaves[0].shape[axis] if leaves else 1
    treedef = jax.tree.structure(moments.mean)
    flat = treedef.flatten_up_to(pooled)
    return RunningMoments(
        moments.count * num_chains,
        treedef.unflatten([f[0] for f in flat]),
        treedef.unflatten([f[1] for f in flat]),
    )


class ChainResult(NamedTuple):
    """What :func:`sample_chains` returns.

    :ivar positions: final positions, a pytree with leading axis ``num_chains``.
    :ivar samples: kept positions, leading axes ``(num_samples, num_chains)`` (the last
        ``num_samples`` states after thinning by ``thin``); ``None`` when ``num_samples == 0``.
    :ivar acceptance_rate: ``(num_chains,)`` mean acceptance rate per chain over all steps
        (NaN where the kernel reports none).
    :ivar logdensity: ``(num_chains,)`` log density at the final positions.
    :ivar state: the final kernel state (batched over chains), to resume sampling with ``init_state``.
    :ivar observables: :class:`RunningMoments` of ``observables(position)`` over the kept states,
        per chain; ``None`` when no ``observables`` function was given.
    """

    positions: Any
    samples: Any
    acceptance_rate: jax.Array
    logdensity: jax.Array
    state: Any
    observables: RunningMoments | None = None


def logdensity_of(logdensity_fn) -> tuple[Callable, tuple | None]:
    """Accept a log-density function or a NumPyro distribution (its ``log_prob``).

    Returns ``(logdensity_fn, event_shape)``; ``event_shape`` is ``None`` for a plain function.
    """
    if isinstance(logdensity_fn, Distribution):
        dist = logdensity_fn
        return dist.log_prob, tuple(dist.event_shape)
    if not callable(logdensity_fn):
        raise TypeError(
            "`logdensity_fn` must be a function x -> log p(x) (i.e. -E(x)) or a NumPyro "
            f"distribution; got {logdensity_fn!r}."
        )
    return logdensity_fn, None


def bind_algorithm(
    init: Callable, kernel: Callable, logdensity_fn: Callable, check_position=None,
    density_input=None, logdensity_output_only=False, **parameters,
) -> SamplingAlgorithm:
    """A ``blackjax.SamplingAlgorithm`` from an ``init(position, logdensity_fn)`` and a
    ``kernel(rng_key, state, logdensity_fn, **parameters)`` (BlackJAX's ``as_top_level_api``
    pattern), with an optional ``check_position(position) -> position`` run by ``init``.

    The check is also attached as ``algorithm.init.check_position``: :func:`sample_chains`
    compiles ``init``, where a check of concrete values cannot run, so it calls the check on the
    whole batch of initial positions first. ``density_input(position)``, attached as
    ``algorithm.init.density_input``, maps one chain's position to the argument of
    ``logdensity_fn`` when the two differ (categorical kernels: integer states, a density of
    their one-hot encoding); :func:`sample_chains` checks the density's shape through it.

    ``logdensity_output_only=True`` declares that ``kernel`` never reads ``state.logdensity``
    and keeps it equal to ``logdensity_fn(state.position)`` (ULA: the move uses the gradient
    only). The step then carries ``step.logdensity_output_only = logdensity_fn``, and
    :func:`sample_chains` evaluates the log density once, after the last step, instead of at
    every step: XLA drops the per-step evaluation, which is otherwise ~12% of a ULA step on an
    MLP energy (the forward pass's last layer and the carried value)."""

    if not callable(logdensity_fn):
        raise TypeError(
            f"`logdensity_fn` must be a function x -> log p(x) (i.e. -E(x)); got {logdensity_fn!r}."
        )

    def init_fn(position, rng_key=None):
        if check_position is not None:
            position = check_position(position)
        return init(position, logdensity_fn)

    init_fn.check_position = check_position
    init_fn.density_input = density_input

    def step_fn(rng_key, state):
        return kernel(rng_key, state, logdensity_fn, **parameters)

    if logdensity_output_only:
        step_fn.logdensity_output_only = logdensity_fn
    return SamplingAlgorithm(init_fn, step_fn)


def is_algorithm(kernel) -> bool:
    """True for a ``blackjax.SamplingAlgorithm`` already bound to one density (has ``init`` and
    ``step`` and is not itself a factory)."""
    return (
        not callable(kernel)
        and callable(getattr(kernel, "init", None))
        and callable(getattr(kernel, "step", None))
    )


def build_algorithm(kernel, logdensity_fn):
    """Call the factory ``kernel(logdensity_fn)`` and check that it is a BlackJAX algorithm.

    This is the one place where a driver turns a kernel *factory* into an algorithm for the
    density the driver chose; an algorithm already bound to a density is refused here, since it
    would sample its own density, not ``logdensity_fn``.
    """
    hint = (
        "`kernel` must be a factory `logdensity_fn -> blackjax.SamplingAlgorithm`, e.g. "
        "`functools.partial(blackjax.mala, step_size=0.05)` or "
        "`functools.partial(numpyro_ebm.ula, step_size=1e-2)`"
    )
    if is_algorithm(kernel) or not callable(kernel):
        raise TypeError(
            f"{hint}; got {kernel!r}. An algorithm already bound to a density (e.g. "
            "`model.kernel(params)`) samples that density only, not the one this driver builds: "
            "pass a factory here, or the model's `annealing_path(params)` where one is accepted."
        )
    try:
        algorithm = kernel(logdensity_fn)
    except TypeError as err:
        raise TypeError(f"{hint}; calling it with the log density failed: {err}") from err
    if not (callable(getattr(algorithm, "init", None)) and callable(getattr(algorithm, "step", None))):
        raise TypeError(f"{hint}; it returned {type(algorithm).__name__}, which has no init/step.")
    return algorithm


def resolve_algorithm(kernel, logdensity_fn, target=None):
    """The algorithm :func:`sample_chains` runs: ``kernel`` built for ``logdensity_fn`` (a
    factory), ``kernel`` itself (an algorithm already bound to a density), or, with
    ``kernel=None``, the exact sampler of ``target``'s annealing path at ``beta = 1``."""
    if kernel is None:
        path = getattr(target, "annealing_path", None)
        if path is None:
            raise TypeError(
                "`kernel` is None, but the density has no sampler of its own: pass a factory "
                "`logdensity_fn -> blackjax.SamplingAlgorithm` (e.g. "
                "`functools.partial(blackjax.mala, step_size=0.05)`), or a built algorithm such "
                "as `model.kernel(params)`."
            )
        return path.kernel(1.0)
    if is_algorithm(kernel):
        return kernel
    if logdensity_fn is None:
        raise TypeError(
            "`logdensity_fn` is None: a kernel factory needs the log density it should sample; "
            "pass one, or pass a built algorithm as `kernel`."
        )
    return build_algorithm(kernel, logdensity_fn)


class _StepKey:
    """``algorithm.step`` (or ``.init``) as a ``jax.jit`` static argument, equal across calls.

    Every call of ``kernel(logdensity_fn)`` builds new ``init``/``step`` closures; hashed by
    identity they would recompile :func:`_run` on every :func:`sample_chains` call. BlackJAX
    factories are pure, so the same ``(kernel, logdensity_fn)`` pair gives the same program: hash
    by that pair.
    """

    def __init__(self, step, kernel, logdensity_fn, tag="step", source=None):
        self.step = step
        if source is not None:  # e.g. a distribution's annealing path: the same path, the same
            self.key = (tag, source)  # sampler, although each build makes new closures
            return
        if kernel is None or is_algorithm(kernel):  # a built algorithm: its own functions
            self.key = (tag, step)
            return
        try:
            hash((kernel, logdensity_fn))
            self.key = (tag, kernel, logdensity_fn)
        except TypeError:  # unhashable factory: fall back to the closure itself
            self.key = (tag, step)

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, _StepKey) and self.key == other.key


def _check_positions(init_positions, logdensity_fn, event_shape, density_input=None):
    """Host-side checks of the batch's structure and of the density's output shape (no value is
    read here: the values' finiteness is checked on the device, see :func:`_value_report`)."""
    num_chains = leading_size("init_positions", init_positions)
    if num_chains == 0:
        raise ValueError(
            "`init_positions` has 0 chains (a leading axis of size 0); expected at least one "
            "chain, shape (num_chains, *event_shape) with num_chains >= 1."
        )
    if event_shape is not None:
        leaves = jax.tree.leaves(init_positions)
        shape = tuple(jnp.shape(leaves[0])[1:])
        if len(leaves) != 1 or shape != event_shape:
            raise ValueError(
                f"`init_positions` must have shape (num_chains, *event_shape) = (num_chains, "
                f"{', '.join(map(str, event_shape))}{',' if len(event_shape) == 1 else ''}); "
                f"got {jnp.shape(leaves[0])}."
            )
    if logdensity_fn is None:
        return num_chains
    # one chain's position, as shapes only (slicing a concrete batch would dispatch an op)
    one = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(jnp.shape(x)[1:], jnp.result_type(x)), init_positions
    )
    try:
        out = _output_shape(logdensity_fn, density_input, one)
    except Exception as err:  # noqa: BLE001 - re-raised with the shape that caused it
        raise ValueError(
            "`init_positions`: the log density failed on one chain's position of shape "
            f"{jax.tree.map(jnp.shape, one)}; does the trailing shape of init_positions match the "
            f"event shape of the density? ({type(err).__name__}: {err})"
        ) from err
    if out != ():
        raise ValueError(
            "`init_positions`: the log density of one chain's position of shape "
            f"{jax.tree.map(jnp.shape, one)} has shape {out}, expected a scalar; does the "
            "trailing shape of init_positions match the event shape of the density?"
        )
    return num_chains


_OUTPUT_SHAPES: dict = {}  # (logdensity_fn, density_input, treedef, shapes) -> output shape


def _output_shape(logdensity_fn, density_input, one) -> tuple:
    """The shape of ``logdensity_fn`` at one chain's position (``jax.eval_shape``, which traces
    the function), remembered per function and input shapes: a repeated call (a sampling loop,
    a benchmark) does not trace the density again."""
    leaves, treedef = jax.tree.flatten(one)
    key = (logdensity_fn, density_input, treedef, tuple((x.shape, x.dtype) for x in leaves))
    try:
        return _OUTPUT_SHAPES[key]
    except TypeError:  # an unhashable callable: no memo
        key = None
    except KeyError:
        pass
    fn = logdensity_fn if density_input is None else lambda x: logdensity_fn(density_input(x))
    shape = tuple(jax.eval_shape(fn, one).shape)
    if key is not None:
        if len(_OUTPUT_SHAPES) >= 256:  # a bounded memo: functions made per call come and go
            _OUTPUT_SHAPES.pop(next(iter(_OUTPUT_SHAPES)))
        _OUTPUT_SHAPES[key] = shape
    return shape


@jax.jit
def _value_report(positions, logdensity):
    """On the device, so that only three integers travel: the number of non-finite entries of
    the (floating) ``positions``, of non-finite ``logdensity`` values, and the first chain with
    one (``-1`` if none). Either argument may be ``None``."""
    bad_x = jnp.zeros((), jnp.int32)
    for leaf in jax.tree.leaves(positions):
        if jnp.issubdtype(leaf.dtype, jnp.inexact):
            bad_x = bad_x + jnp.sum(~jnp.isfinite(leaf), dtype=jnp.int32)
    if logdensity is None:
        return jnp.stack([bad_x, jnp.int32(0), jnp.int32(-1)])
    bad = ~jnp.isfinite(logdensity)
    first = jnp.where(jnp.any(bad), jnp.argmax(bad), -1).astype(jnp.int32)
    return jnp.stack([bad_x, jnp.sum(bad, dtype=jnp.int32), first])


@jax.jit
def _end_report(logdensity, acceptance_rate):
    """``(number of non-finite final log densities, 1 if no chain accepted anything)``."""
    no_move = (acceptance_rate.size > 0) & jnp.all(acceptance_rate == 0.0)
    return jnp.stack([jnp.sum(~jnp.isfinite(logdensity), dtype=jnp.int32),
                      no_move.astype(jnp.int32)])


def _raise_nonfinite_positions(count):
    raise ValueError(
        f"`init_positions` contains {count} non-finite value(s) (NaN or inf); expected finite "
        "values."
    )


def _chain_sharding(num_chains, tree=None):
    """Shard the chain axis over the devices when there are several and they divide it: every
    process's devices (``jax.devices()``) for a global array spanning several processes (or
    traced values in a one-process run), this process's own (``jax.local_devices()``) for arrays
    it holds whole; ``None`` for traced values in a multi-process run (the input shardings then
    propagate through the program)."""
    leaves = jax.tree.leaves(tree)
    if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
        if jax.process_count() > 1:
            return None
        devices = jax.devices()
    elif any(isinstance(leaf, jax.Array) and not leaf.is_fully_addressable for leaf in leaves):
        devices = jax.devices()
    else:
        devices = jax.local_devices()
    if len(devices) < 2 or num_chains % len(devices):
        return None
    mesh = jax.sharding.Mesh(np.array(devices), ("chains",))
    return NamedSharding(mesh, PartitionSpec("chains"))


# Up to _KEY_BLOCK_CHAINS chains, the keys of a block of up to _KEY_BLOCK // num_chains steps are
# hashed in one call ahead of the block's loop; more chains hash each step's keys in the loop,
# where the hash of step t + 1 overlaps the step's own work (measured on 2 CPU cores: blocks are
# 1.15x faster at 128 chains of a small MLP, 0.93x at 1024 RBM chains)
_KEY_BLOCK_CHAINS = 256
_KEY_BLOCK = 1 << 13
# On an accelerator every loop iteration launches its kernels, and the per-step hash is a launch
# or two of its own: the keys of a block of steps are hashed ahead for any number of chains, up
# to _ACCELERATOR_KEY_BLOCK keys (8 bytes each) at a time
_ACCELERATOR_KEY_BLOCK = 1 << 22


def _key_block(num_chains: int, num_steps: int) -> int:
    """How many steps' keys :func:`_run` hashes in one call ahead of their loop (1: each step
    hashes its own, inside the loop)."""
    if jax.default_backend() == "cpu":
        if num_chains > _KEY_BLOCK_CHAINS:
            return 1
        return max(1, min(num_steps, _KEY_BLOCK // num_chains))
    return max(1, min(num_steps, _ACCELERATOR_KEY_BLOCK // num_chains))


def _chain_index(chain_offset, num_chains):
    """The run's global indices ``chain_offset + [0, num_chains)`` of a batch of chains."""
    return jnp.asarray(chain_offset, jnp.uint32) + jnp.arange(num_chains, dtype=jnp.uint32)


def _chain_keys(key, chain_index):
    """One key per chain, ``fold_in(key, c)`` for each index ``c``: a vectorized hash of the
    indices under one scalar key (what ``jax.random.split`` does), so a chain's key depends on
    its index only, whatever the devices or the batch it runs in."""
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, chain_index)


def _init_impl(rng_key, init_positions, chain_offset, *, algorithm_init):
    """``vmap(algorithm.init)``, traced into :func:`_init_and_run` (eagerly it would dispatch
    op by op); chains
    ``chain_offset:chain_offset + n`` of the run, chain ``c`` with the key
    ``fold_in(fold_in(rng_key, 1), c)``. Returns the states and their :func:`_value_report`."""
    num_chains = jax.tree.leaves(init_positions)[0].shape[0]
    init_keys = _chain_keys(jax.random.fold_in(rng_key, 1), _chain_index(chain_offset, num_chains))
    states = jax.vmap(algorithm_init.step)(init_positions, init_keys)
    return states, _value_report(init_positions, getattr(states, "logdensity", None))


_RUN_STATIC = (
    "algorithm_step", "num_burn", "num_samples", "thin", "sharding", "observables",
    "keep_samples", "peel_last",
)


def _run_impl(
    rng_key, states, chain_offset, *, algorithm_step, num_burn, num_samples, thin, sharding,
    observables, keep_samples, peel_last=False,
):
    def constrain(tree):
        if sharding is None:
            return tree
        return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)

    # Step t of chain c uses the key fold_in(fold_in(step_root, t), c): one scalar hash per
    # step, then the chains' keys from their global indices (_chain_keys), with no key in the
    # carry; a chunked run's batch hashes its own slice of indices. A scalar key over an index
    # vector hashes faster than one key per chain (fold_in(chain_keys[c], t)). For a few chains
    # the keys of a block of steps are hashed in one call before the block's loop: on CPU every
    # threefry call is a loop of its own, whose per-call cost is a large part of a small step.
    num_chains = jax.tree.leaves(states)[0].shape[0]
    step_root = jax.random.fold_in(rng_key, 2)  # 1 is _init's
    chain_index = constrain(_chain_index(chain_offset, num_chains))

    def keys_of(t, n):  # the keys of steps t .. t + n - 1: shape (n, num_chains)
        steps = jnp.asarray(t, jnp.uint32) + jnp.arange(n, dtype=jnp.uint32)
        step_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(step_root, steps)
        return jax.vmap(_chain_keys, in_axes=(0, None))(step_keys, chain_index)

    def one_step(carry, keys):
        states, acc_sum, t = carry
        states, info = jax.vmap(algorithm_step.step)(keys, states)
        rate = getattr(info, "acceptance_rate", None)
        if rate is None:
            rate = jnp.full(acc_sum.shape, jnp.nan, acc_sum.dtype)
        acc_sum = acc_sum + jnp.reshape(rate, acc_sum.shape).astype(acc_sum.dtype)
        return (constrain(states), acc_sum, t + 1), None

    def steps_with(carry, keys):  # as many steps as keys
        if keys.shape[0] == 1:  # e.g. CD-1: no loop, a smaller program that compiles faster
            return one_step(carry, keys[0])[0]
        return jax.lax.scan(one_step, carry, keys)[0]

    def run_recording(loop, n, record=lambda loop, carry: ()):
        """``n`` steps in one loop holding one copy of the step; ``loop = (carry, *recorded)``,
        updated by ``record(loop, carry)`` after each step. For a few chains the keys of a block
        of steps are hashed ahead of the block, and a last partial block runs in the same loop
        (a loop of its own would compile the step again)."""
        if n == 0:
            return loop

        def body(loop, keys):
            carry = one_step(loop[0], keys)[0]
            return (carry, *record(loop, carry))

        block = _key_block(num_chains, n)
        if n == 1:
            return body(loop, keys_of(loop[0][2], 1)[0])
        if block == 1:  # each step hashes its own keys, inside the loop

            def each(loop, _):
                return body(loop, keys_of(loop[0][2], 1)[0]), None

            return jax.lax.scan(each, loop, None, length=n)[0]
        num_blocks = -(-n // block)

        def run_block(loop, b):
            keys = keys_of(loop[0][2], block)
            if n % block == 0:
                return jax.lax.scan(lambda lp, k: (body(lp, k), None), loop, keys)[0], None
            count = jnp.minimum(block, n - b * block)  # the last block is partial
            return jax.lax.fori_loop(0, count, lambda i, lp: body(lp, keys[i]), loop), None

        if num_blocks == 1:
            return run_block(loop, 0)[0]
        return jax.lax.scan(run_block, loop, jnp.arange(num_blocks))[0]

    def run_steps(carry, n, peel_last=False):
        if peel_last and n > 1:
            # the last step out of the loop: when the caller keeps only the positions (a
            # training loss under jit), its state's gradient and log density are dead, and XLA
            # drops them
            if _key_block(num_chains, n) == n:
                keys = keys_of(carry[2], n)
                return one_step(steps_with(carry, keys[:-1]), keys[-1])[0]
            carry = run_steps(carry, n - 1)
            return one_step(carry, keys_of(carry[2], 1)[0])[0]
        return run_recording((carry,), n)[0]

    carry = (states, jnp.zeros((num_chains,), jnp.float32), jnp.zeros((), jnp.uint32))
    total = num_burn + num_samples * thin
    if observables is None and not (num_samples and keep_samples):
        carry = run_steps(carry, total, peel_last=peel_last and num_samples == 0)
        return _finish(carry, algorithm_step, total, constrain) + (None, None)
    if observables is None:
        # burn-in and kept samples in one loop: the step is compiled once (twice as two loops,
        # about half the compile time of a small program). Step t writes its position to slot
        # clip((t - num_burn) // thin) of the samples, so the last write to slot k is the kept
        # state num_burn + (k + 1) * thin - 1; burn-in steps write slot 0 until it is kept
        samples = jax.tree.map(
            lambda x: jnp.zeros((num_samples, *x.shape), x.dtype), states.position
        )

        def record(loop, carry):
            t = carry[2].astype(jnp.int32) - 1  # the step just taken
            slot = jnp.clip((t - num_burn) // thin, 0, num_samples - 1)
            return (jax.tree.map(
                lambda b, x: jax.lax.dynamic_update_index_in_dim(b, x, slot, 0),
                loop[1], carry[0].position,
            ),)

        carry, samples = run_recording((carry, samples), total, record)
        return _finish(carry, algorithm_step, total, constrain) + (samples, None)
    # with observables: burn-in, then a loop over the kept states that updates their moments
    carry = run_steps(carry, num_burn, peel_last=peel_last and num_samples == 0)
    shapes = jax.eval_shape(jax.vmap(observables.step), states.position)
    zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, jnp.result_type(float, a.dtype)), shapes)
    moments = RunningMoments(jnp.zeros((), jnp.float32), zeros, zeros)
    samples = None
    if num_samples:

        def keep(loop, _):
            carry, moments = loop
            carry = run_steps(carry, thin)
            position = carry[0].position
            moments = _welford(moments, jax.vmap(observables.step)(position))
            return (carry, moments), (position if keep_samples else None)

        (carry, moments), samples = jax.lax.scan(keep, (carry, moments), None, length=num_samples)
    return _finish(carry, algorithm_step, total, constrain) + (samples, moments)


def _finish(carry, algorithm_step, total, constrain):
    """``(final states, acceptance rate)`` of a run's last ``carry``."""
    states = carry[0]
    final_logdensity = getattr(algorithm_step.step, "logdensity_output_only", None)
    if final_logdensity is not None and total > 0:
        # the step never reads state.logdensity: evaluate it once here, so that the per-step
        # evaluation is dead and XLA removes it from the loop
        states = states._replace(logdensity=constrain(jax.vmap(final_logdensity)(states.position)))
    return states, carry[1] / max(total, 1)


_run = jax.jit(_run_impl, static_argnames=_RUN_STATIC)  # resuming from a state


@partial(jax.jit, static_argnames=("algorithm_init", *_RUN_STATIC))
def _init_and_run(rng_key, init_positions, chain_offset, *, algorithm_init, **run_options):
    """Initialize and run in one compiled program (one dispatch per call, which on a GPU is a
    large part of a short run), with the checks' reports: ``(states, acceptance, samples,
    moments, report)``, ``report = [non-finite initial position entries, non-finite initial
    log densities, first such chain, non-finite final log densities, no move]``, without the
    last two when the final state keeps no log density (:func:`sample_chains` then checks it)."""
    states, report = _init_impl(rng_key, init_positions, chain_offset,
                                algorithm_init=algorithm_init)
    sharding = run_options["sharding"]
    if sharding is not None:
        states = jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding), states)
    states, acceptance, samples, moments = _run_impl(rng_key, states, chain_offset,
                                                     **run_options)
    logdensity = getattr(states, "logdensity", None)
    if logdensity is not None:
        report = jnp.concatenate([report, _end_report(logdensity, acceptance)])
    return states, acceptance, samples, moments, report


def _welford(moments: RunningMoments, value) -> RunningMoments:
    count = moments.count + 1.0

    def update(mean, m2, x):
        delta = x - mean
        mean = mean + delta / count
        return mean, m2 + delta * (x - mean)

    pairs = jax.tree.map(update, moments.mean, moments.m2, value)
    treedef = jax.tree.structure(moments.mean)
    flat = treedef.flatten_up_to(pairs)
    return RunningMoments(
        count, treedef.unflatten([p[0] for p in flat]), treedef.unflatten([p[1] for p in flat])
    )


def sample_chains(
    rng_key,
    logdensity_fn,
    kernel,
    init_positions,
    num_steps: int,
    num_samples: int = 0,
    thin: int = 1,
    *,
    init_state=None,
    observables: Callable | None = None,
    keep_samples: bool = True,
    chain_batch_size: int | None = None,
) -> ChainResult:
    r"""Run ``num_chains`` independent chains of a BlackJAX kernel for ``num_steps`` steps.

    Chains are ``jax.vmap``-ed, steps are a ``lax.scan``, the whole run is one ``jax.jit``-ed
    program. Each chain gets its own key (split from ``rng_key``), so results do not depend on the
    number of devices. With several devices the chain axis is sharded over them
    (``jax.sharding.NamedSharding``) when they divide ``num_chains``.

    The compiled program is cached per ``(kernel, logdensity_fn)`` pair (and shapes), so repeated
    calls with the same two objects do not recompile. As with ``jax.jit``, values that
    ``logdensity_fn`` reads from an enclosing or global scope are frozen at the first call: when
    they change (e.g. network parameters in a training loop), pass a new function, or call
    ``sample_chains`` inside your own ``jax.jit``-ed step.

    :param rng_key: a JAX PRNG key.
    :param logdensity_fn: :math:`\log p(x) = -E(x)` up to a constant, for one position (a pytree
        like one chain's slice of ``init_positions``); or a NumPyro distribution, whose ``log_prob``
        is used and whose ``event_shape`` ``init_positions`` is checked against. May be ``None``
        when ``kernel`` is a built algorithm (it then only serves the checks).
    :param kernel: one of

        * a factory ``logdensity_fn -> blackjax.SamplingAlgorithm``, e.g.
          ``functools.partial(blackjax.mala, step_size=0.05)``,
          ``functools.partial(numpyro_ebm.ula, step_size=1e-2)``,
          ``functools.partial(blackjax.nuts, step_size=0.5, inverse_mass_matrix=jnp.ones(2))``;
        * an algorithm already bound to one density (``init``/``step``), e.g. a model's exact
          sampler ``ising.kernel(params)``; it samples its own density, and ``logdensity_fn`` is
          then only used to check ``init_positions``;
        * ``None``, when ``logdensity_fn`` is an ``Unnormalized`` distribution that carries an
          :class:`~numpyro_ebm.AnnealingPath` (``model.distribution(params)``): its exact
          sampler at ``beta = 1``.
    :param init_positions: pytree with a leading chain axis, e.g. shape ``(num_chains, *event_shape)``.
    :param int num_steps: total number of transitions per chain.
    :param int num_samples: number of states to keep, the last ``num_samples`` after thinning
        (``num_samples * thin <= num_steps``).
    :param int thin: keep every ``thin``-th state.
    :param init_state: optional batched kernel state to resume from (``ChainResult.state``), or
        the earlier ``ChainResult`` itself; ``init_positions`` may then be ``None`` (it is read
        from the state) and is otherwise only validated. Pass a new ``rng_key`` when resuming:
        step ``t`` of a run uses the same random numbers for the same key.
    :param observables: optional ``f(position) -> pytree of arrays`` for one chain, evaluated at
        each of the ``num_samples`` kept states inside the scan and reduced on the fly to a
        per-chain running mean and variance (:class:`RunningMoments`, in
        ``ChainResult.observables``; :func:`pool_moments` pools the chains). With
        ``keep_samples=False`` a run needs memory O(num_chains), whatever ``num_samples``.
    :param bool keep_samples: hold the kept states in ``ChainResult.samples`` (default). Set it to
        ``False`` with ``observables`` to keep only the streamed statistics.
    :param chain_batch_size: optional; run the chains this many at a time (one compiled program
        per batch size, batches in sequence) when all of them do not fit in memory at once. The
        results are identical to the unbatched run's (each chain keeps its own key).
    :return: a :class:`ChainResult`: ``positions`` (final), ``samples``
        ``(num_samples, num_chains, ...)``, ``acceptance_rate`` ``(num_chains,)``, ``logdensity``
        ``(num_chains,)`` and the final ``state``.

    **Example**

    .. code-block:: python

        result = numpyro_ebm.sample_chains(
            jax.random.key(0), lambda x: -energy(x), functools.partial(blackjax.mala, step_size=0.05),
            init_positions=jnp.zeros((4096, 2)), num_steps=1000, num_samples=100, thin=5)
        result.samples.shape   # (100, 4096, 2)
    """
    rng_key = check_rng_key(rng_key)
    target = logdensity_fn
    logdensity_fn, event_shape = (None, None) if target is None else logdensity_of(target)
    if isinstance(init_state, ChainResult):
        init_state = init_state.state
    if init_state is not None:
        if not hasattr(init_state, "position"):
            raise TypeError(
                "`init_state` must be the batched kernel state of an earlier run "
                f"(`ChainResult.state`) or the `ChainResult` itself; got {type(init_state).__name__}"
                ", which has no `position`."
            )
        if init_positions is None:
            init_positions = init_state.position
    if observables is not None and not callable(observables):
        raise TypeError(
            f"`observables` must be a function position -> pytree of arrays; got {observables!r}."
        )
    if not isinstance(keep_samples, bool):
        raise TypeError(f"`keep_samples` must be a bool, got {keep_samples!r}.")
    num_steps = check_int("num_steps", num_steps, 0)
    num_samples = check_int("num_samples", num_samples, 0)
    thin = check_int("thin", thin, 1)
    if num_samples * thin > num_steps:
        raise ValueError(
            f"`num_samples` * `thin` = {num_samples * thin} exceeds `num_steps` = {num_steps}; "
            "keep at most num_steps // thin samples."
        )
    algorithm = resolve_algorithm(kernel, logdensity_fn, target)
    num_chains = _check_positions(
        init_positions, logdensity_fn, event_shape, getattr(algorithm.init, "density_input", None)
    )
    check_position = getattr(algorithm.init, "check_position", None)
    if check_position is not None and init_state is None and is_concrete(init_positions):
        # the kernel's own check reads the values (the run below is compiled): NaN first
        check_finite("init_positions", init_positions)
        check_position(init_positions)

    batch = num_chains if chain_batch_size is None else check_int(
        "chain_batch_size", chain_batch_size, 1)
    source = None
    if kernel is None:  # the distribution's own sampler: cache the program by its path
        source = ("annealing_path", target.annealing_path.kernel, 1.0)
    run = partial(
        _run_batch, rng_key, algorithm, kernel, logdensity_fn, init_positions, init_state, source,
        num_chains=num_chains, num_steps=num_steps, num_samples=num_samples, thin=thin,
        observables=None if observables is None else _StepKey(observables, None, None, "obs"),
        keep_samples=keep_samples,
    )
    end_report = None
    if batch >= num_chains:
        states, acceptance_rate, samples, moments, end_report = run(0, num_chains)
    else:
        parts = [run(start, min(batch, num_chains - start)) for start in range(0, num_chains, batch)]
        states, acceptance_rate, samples, moments = _concatenate_batches(parts)
    positions = states.position
    logdensity = getattr(states, "logdensity", None)
    # a kernel whose state keeps no log density (RBM block Gibbs) may name its target's
    final_logdensity_fn = logdensity_fn or getattr(algorithm.init, "logdensity_fn", None)
    if logdensity is None and final_logdensity_fn is not None:
        logdensity = jax.vmap(final_logdensity_fn)(positions)
        end_report = None  # computed here, not in the run
    if logdensity is None:
        logdensity = jnp.full((num_chains,), jnp.nan)
    if is_concrete(logdensity) and is_concrete(acceptance_rate):
        # two integers from the device, not the chains' values (10^7 chains: 80 MB)
        if end_report is None:
            end_report = _end_report(logdensity, acceptance_rate)
        num_bad, no_move = ((int(v) for v in np.asarray(end_report)) if is_concrete(end_report)
                            else (0, 0))
        if num_bad:
            warnings.warn(
                f"sample_chains: {num_bad} of {num_chains} chains ended at a non-finite "
                "log density (diverged); reduce the kernel's step_size.",
                RuntimeWarning,
                stacklevel=2,
            )
        if num_steps >= 10 and no_move:
            warnings.warn(
                f"sample_chains: no proposal was accepted in any of the {num_chains} chains over "
                f"{num_steps} steps: the chains did not move. The kernel's step_size is likely "
                "far too large for this density (or the initial positions sit where it is 0).",
                RuntimeWarning,
                stacklevel=2,
            )
    return ChainResult(positions, samples, acceptance_rate, logdensity, states, moments)


def _run_batch(rng_key, algorithm, kernel, logdensity_fn, init_positions, init_state, source,
               start, size, *, num_chains, num_steps, num_samples, thin, observables,
               keep_samples):
    """Initialize (or slice the resumed state of) chains ``start:start + size`` and run them."""

    def part(tree):
        if size == num_chains:
            return tree
        return jax.tree.map(lambda x: x[start : start + size], tree)

    sharding = _chain_sharding(size, init_positions if init_state is None else init_state)
    run_options = dict(
        algorithm_step=_StepKey(algorithm.step, kernel, logdensity_fn, source=source),
        num_burn=num_steps - num_samples * thin,
        num_samples=num_samples,
        thin=thin,
        sharding=sharding,
        observables=observables,
        keep_samples=keep_samples,
    )
    if init_state is None:
        init_fn = _StepKey(algorithm.init, kernel, logdensity_fn, tag="init", source=source)
        positions = part(init_positions)
        traced = not is_concrete((rng_key, positions))  # inside the caller's jit
        try:
            *result, report = _init_and_run(
                rng_key, positions, start, algorithm_init=init_fn, peel_last=traced,
                **run_options)
        except TypeError as err:
            ints = [
                jnp.result_type(leaf)
                for leaf in jax.tree.leaves(positions)
                if not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
            ]
            if not ints or "grad" not in str(err):
                raise
            raise TypeError(
                f"`init_positions` has dtype {ints[0]}, but this kernel takes gradients of the "
                "log density, which integers cannot have: pass floating-point positions (e.g. "
                "`init_positions.astype(float)`). Integer positions are for discrete kernels "
                "(Gibbs samplers) only."
            ) from err
        if not is_concrete(report):  # e.g. a kernel that closes over a caller's tracer
            report = None
            check_finite("init_positions", positions)  # reads nothing when traced itself
    else:
        states = part(init_state)
        if sharding is not None and is_concrete(states):
            states = jax.device_put(states, sharding)
        traced = not is_concrete((rng_key, states))
        result = _run(rng_key, states, start, peel_last=traced, **run_options)
        report = None
        if not traced and is_concrete(init_positions):
            report = _value_report(part(init_positions), getattr(states, "logdensity", None))
            if not is_concrete(report):
                report = None
    if report is None:
        return (*result, None)
    # one read from the device, after the whole run: a handful of integers, not the chains'
    # values (10^7 chains: 80 MB)
    report = np.asarray(report)
    bad_x, bad_logdensity, first = (int(v) for v in report[:3])
    if bad_x:
        _raise_nonfinite_positions(bad_x)
    if bad_logdensity:
        raise ValueError(
            f"`init_positions`: the log density is not finite at {bad_logdensity} of "
            f"{size} initial positions (e.g. chain {start + first}); start the "
            "chains where the density is positive."
        )
    return (*result, report[3:] if report.size == 5 else None)


def _concatenate_batches(parts):
    """Join the per-batch ``(states, acceptance, samples, moments)`` along the chain axis."""
    states = jax.tree.map(lambda *x: jnp.concatenate(x, 0), *[p[0] for p in parts])
    acceptance = jnp.concatenate([p[1] for p in parts], 0)
    samples = None
    if parts[0][2] is not None:
        samples = jax.tree.map(lambda *x: jnp.concatenate(x, 1), *[p[2] for p in parts])
    moments = None
    if parts[0][3] is not None:
        first = parts[0][3]
        moments = RunningMoments(
            first.count,
            jax.tree.map(lambda *x: jnp.concatenate(x, 0), *[p[3].mean for p in parts]),
            jax.tree.map(lambda *x: jnp.concatenate(x, 0), *[p[3].m2 for p in parts]),
        )
    return states, acceptance, samples, moments
