"""Training robustness around ``numpyro.infer.SVI``: a NaN guard and checkpoints.

Nothing here replaces NumPyro's loop. Skipping non-finite updates is NumPyro's and Optax's job
(``svi.run(..., stable_update=True)``, ``optax.apply_if_finite``); these helpers make the outcome
loud (:func:`check_finite_params`, :func:`check_svi_result`) and save/restore the whole
``SVIState``, persistent chains included (:func:`save_checkpoint`, :func:`load_checkpoint`), in a
msgpack file (``flax.serialization``) that holds only arrays and strings: loading one never runs
code, unlike a pickle.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from typing import Any

import jax
import numpy as np
import optax
from flax import serialization

__all__ = ["check_finite_params", "check_svi_result", "save_checkpoint", "load_checkpoint"]

_HINT = (
    "Training diverged. Likely causes: a sampler step_size too large for the energy (reduce the "
    "kernel's step_size), a learning rate too large, or energies growing without bound (set "
    "`alpha`, e.g. 0.1, on a contrastive estimator). Train with `svi.run(..., "
    "stable_update=True)` or `optax.apply_if_finite(optimizer, max_consecutive_errors)` to skip "
    "non-finite updates."
)


def _nonfinite_leaves(tree, what: str) -> list[tuple[str, int, int]]:
    """``(f"{what}{path}", non-finite count, size)`` of every floating-point leaf of ``tree``
    that holds NaN or inf."""
    bad = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        arr = np.asarray(leaf)
        if np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
            count = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            bad.append((f"{what}{jax.tree_util.keystr(path)}", count, arr.size))
    return bad


def check_finite_params(params, what: str = "params") -> None:
    """Raise ``FloatingPointError`` naming every parameter that holds NaN or inf.

    :param params: a pytree of arrays, e.g. ``svi_result.params`` or ``svi.get_params(state)``.
    :param str what: how to call ``params`` in the message.

    **Example**

    .. code-block:: python

        result = svi.run(key, 5000, data, stable_update=True)
        numpyro_ebm.check_finite_params(result.params)
    """
    bad = [
        f"{name} ({count} of {size} non-finite)"
        for name, count, size in _nonfinite_leaves(params, what)
    ]
    if bad:
        raise FloatingPointError(f"non-finite values in {', '.join(bad)}. {_HINT}")


def _skipped_by_optax(optim_state) -> int:
    """Updates ``optax.apply_if_finite`` skipped, summed over its states in ``optim_state``."""
    total = 0
    for leaf in jax.tree.leaves(
        optim_state, is_leaf=lambda x: isinstance(x, optax.ApplyIfFiniteState)
    ):
        if isinstance(leaf, optax.ApplyIfFiniteState):
            total += int(np.asarray(leaf.total_notfinite))
    return total


#: ``check_svi_result``'s default bound on ``|param|``: a float32 parameter this large has left
#: any scale a model is trained at (it grew without bound), though it is still finite.
MAX_ABS_PARAM = 1e10


def _nonfinite_optimizer_leaves(optim_state) -> list[str]:
    """Paths of the floating-point leaves of ``optim_state`` that hold NaN or inf."""
    return [name for name, _, _ in _nonfinite_leaves(optim_state, "optim_state")]


def _all_zero_moments(optim_state) -> bool:
    """Whether ``optim_state`` has floating-point leaves (an optimizer's moments) and all are 0."""
    leaves = [
        np.asarray(leaf)
        for leaf in jax.tree.leaves(optim_state)
        if np.issubdtype(np.asarray(leaf).dtype, np.inexact)
    ]
    return bool(leaves) and all(not np.any(leaf) for leaf in leaves)


def check_svi_result(
    svi_result, max_skipped_fraction: float = 0.1, max_abs_param: float = MAX_ABS_PARAM
) -> None:
    """Check an ``SVIRunResult``: raise on a diverged or frozen run, warn on skipped updates.

    Raises ``FloatingPointError`` (with the likely cause) when

    * a parameter is not finite (NaN or inf);
    * a parameter is finite but ``|param| > max_abs_param`` (it grew without bound);
    * the optimizer state holds NaN or inf: e.g. Adam's second moment overflowed (gradients
      above ~1e19 in float32, from energies of order 1e30), after which every update is zero
      and the parameters freeze at their values with a finite loss (the message says when the
      losses are bitwise constant, the usual sign);
    * the run is frozen: the losses are bitwise constant over all (at least 10) steps and the
      optimizer's statistics are all zero (every gradient was exactly 0);
    * more than ``max_skipped_fraction`` of the steps were skipped;

    and warns (``RuntimeWarning``) when the loss stalled: bitwise constant over the last
    ``max(10, 10%)`` steps after changing before.

    Updates skipped by ``stable_update=True`` show as NaN entries of ``svi_result.losses``;
    updates skipped by ``optax.apply_if_finite`` are counted in its optimizer state. A few
    skipped steps give a ``RuntimeWarning``.

    :param svi_result: what ``svi.run`` returned.
    :param float max_skipped_fraction: the fraction of skipped steps above which to raise.
    :param float max_abs_param: the bound on ``|param|`` above which to raise (default
        :data:`MAX_ABS_PARAM`, ``1e10``).
    :return: ``None``.

    **Example**

    .. code-block:: python

        result = svi.run(key, 5000, data)
        numpyro_ebm.check_svi_result(result)  # FloatingPointError if the run diverged or froze
    """
    check_finite_params(svi_result.params)
    large = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(svi_result.params):
        arr = np.asarray(leaf)
        if (
            np.issubdtype(arr.dtype, np.inexact)
            and arr.size
            and np.max(np.abs(arr)) > max_abs_param
        ):
            large.append(
                f"params{jax.tree_util.keystr(path)} (max |value| {float(np.max(np.abs(arr))):.3g})"
            )
    if large:
        raise FloatingPointError(
            f"parameters grew beyond max_abs_param={max_abs_param:g}: {', '.join(large)}. The "
            f"run diverged although the values are still finite. {_HINT}"
        )
    losses = np.asarray(svi_result.losses)
    num_updates = max(losses.size, 1)
    optim_state = svi_result.state.optim_state if svi_result.state is not None else None
    bad_optim = _nonfinite_optimizer_leaves(optim_state)
    if bad_optim:
        frozen = losses.size > 1 and bool(np.all(losses == losses.flat[0]))
        raise FloatingPointError(
            f"the optimizer state holds NaN or inf at {', '.join(bad_optim[:4])}"
            + (
                f"; the loss stayed bitwise constant ({losses.flat[0]:.6g}) over all "
                f"{losses.size} steps"
                if frozen
                else ""
            )
            + ". The gradients overflowed the optimizer's float32 statistics (e.g. Adam's second "
            "moment): updates are then zero or NaN and the parameters are frozen. Likely cause: "
            "energies of enormous magnitude (|E| ~ 1e30); rescale the energy, or set `alpha` "
            f"on a contrastive estimator to penalize large energies. {_HINT}"
        )
    if losses.size >= 10 and np.all(losses == losses.flat[0]) and _all_zero_moments(optim_state):
        raise FloatingPointError(
            f"the run is frozen: the loss stayed bitwise constant ({losses.flat[0]:.6g}) over all "
            f"{losses.size} steps and the optimizer's statistics are all zero (every gradient was "
            "exactly 0: the parameters never moved). Likely causes: energies so large (|E| ~ "
            "1e30) that the sampler rejects every move and the negatives equal the data, or a "
            "loss that does not depend on the parameters. Rescale the energy or check the "
            "model's parameters."
        )
    tail = max(10, losses.size // 10)
    if losses.size >= 2 * tail and np.all(losses[-tail:] == losses[-1]) and np.isfinite(losses[-1]):
        warnings.warn(
            f"the loss stayed bitwise constant ({losses[-1]:.6g}) over the last {tail} of "
            f"{losses.size} steps after changing before: the run stalled (the parameters no longer "
            "change the loss). Unless it converged exactly, the likely cause is a learning rate "
            "so large that a step threw the energy into a region where its gradients vanish (a "
            "flat or unbounded energy, chains whose every proposal is rejected). Lower the "
            "learning rate and check the parameters.",
            RuntimeWarning,
            stacklevel=2,
        )
    skipped_nan = int(np.count_nonzero(~np.isfinite(losses)))
    skipped = max(skipped_nan, _skipped_by_optax(optim_state))
    if not skipped:
        return
    message = (
        f"{skipped} of {num_updates} training steps had a non-finite loss or gradient and were "
        "skipped (the parameters stayed finite)."
    )
    if skipped > max_skipped_fraction * num_updates:
        raise FloatingPointError(f"{message} {_HINT}")
    warnings.warn(f"{message} {_HINT}", RuntimeWarning, stacklevel=2)


# --------------------------------------------------------------------------------------------
# checkpoints

_FORMAT = "numpyro_ebm.checkpoint"
_VERSION = 1
# First byte of a pickle: the protocol marker (protocols 2-5) or a protocol 0/1 opcode. A
# checkpoint starts with a msgpack map header (0x80-0x8f with a non-empty map, 0xde, 0xdf).
_PICKLE_OPCODES = (b"\x80", b"(", b"c", b"]", b"}", b")", b"N")


def _is_typed_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _encode_leaf(path: str, x) -> dict:
    if _is_typed_key(x):
        return {
            "key_impl": str(jax.random.key_impl(x)),
            "key_data": np.asarray(jax.random.key_data(x)),
        }
    if isinstance(x, (jax.Array, np.ndarray, np.generic)):
        return {"array": np.asarray(x)}
    if isinstance(x, (bool, int, float)):
        return {"scalar": x}
    raise TypeError(
        f"save_checkpoint: the leaf at {path} is a {type(x).__name__}; a checkpoint holds arrays, "
        "PRNG keys and Python scalars only."
    )


def _decode_leaf(path: str, entry: dict):
    if "key_impl" in entry:
        return jax.random.wrap_key_data(
            jax.numpy.asarray(entry["key_data"]), impl=entry["key_impl"]
        )
    if "array" in entry:
        return jax.numpy.asarray(entry["array"])
    if "scalar" in entry:
        return entry["scalar"]
    raise ValueError(
        f"load_checkpoint: the entry at {path} is neither an array, a key nor a scalar."
    )


def save_checkpoint(path: str | os.PathLike, svi_state: Any) -> None:
    """Save an ``SVIState`` (parameters, optimizer state, mutable state such as PCD chains and
    replay buffer, and the PRNG key) to ``path``.

    The file is msgpack (``flax.serialization.msgpack_serialize``) of a flat dictionary: every
    leaf of the state, under its ``jax.tree_util.keystr`` path, as a NumPy array (typed PRNG keys
    as their ``jax.random.key_data`` plus the name of their implementation), and a manifest (the
    paths and the tree structure as text). It holds no code: :func:`load_checkpoint` rebuilds the
    state's structure from a template of your own.

    The write is atomic: the bytes go to a temporary file in the same directory, which is
    flushed, ``os.fsync``-ed and moved onto ``path`` with ``os.replace``; a crash or kill at any
    moment leaves the previous checkpoint at ``path`` intact and loadable.

    Resuming from it continues the run exactly: ``svi.run(key, n, data, init_state=state)``
    gives bit-for-bit what the uninterrupted run would have (the key inside the state drives
    the steps; the ``key`` passed to ``run`` is then unused).

    **Example**

    .. code-block:: python

        result = svi.run(key, 1000, data)
        numpyro_ebm.save_checkpoint("ckpt.msgpack", result.state)
        # later, in a new process: build the same model/guide/optimizer/loss, then
        svi = SVI(model, pcd.guide, optim, loss=pcd)
        template = svi.init(key, data)          # also sets up svi's parameter transforms
        state = numpyro_ebm.load_checkpoint("ckpt.msgpack", like=template)
        result = svi.run(key, 1000, data, init_state=state)
    """
    leaves, treedef = jax.tree_util.tree_flatten_with_path(svi_state)
    paths = [jax.tree_util.keystr(p) for p, _ in leaves]
    payload = {
        "format": _FORMAT,
        "version": _VERSION,
        "treedef": str(treedef),
        "paths": {str(i): p for i, p in enumerate(paths)},
        "leaves": {str(i): _encode_leaf(p, x) for i, (p, (_, x)) in enumerate(zip(paths, leaves))},
    }
    _write_atomic(path, serialization.msgpack_serialize(payload))


def _write_atomic(path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash at any moment leaves either the old file or the
    new one, never a truncated file: write a temporary file in the same directory, flush, fsync,
    ``os.replace`` it onto ``path`` (atomic on POSIX and Windows), then fsync the directory."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        with contextlib.suppress(OSError):
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def _read_checkpoint(path) -> dict:
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:1] in _PICKLE_OPCODES:
        raise ValueError(
            f"load_checkpoint: {os.fspath(path)!r} looks like a pickle file (numpyro-ebm 0.1 "
            "checkpoints were pickles). Pickles are never loaded, since loading one can run "
            "arbitrary code; re-save the state with numpyro_ebm 0.2's save_checkpoint."
        )
    try:
        payload = serialization.msgpack_restore(raw)
    except Exception as err:  # noqa: BLE001 - any decoding failure means "not a checkpoint"
        raise ValueError(
            f"load_checkpoint: {os.fspath(path)!r} is not a checkpoint written by "
            f"numpyro_ebm.save_checkpoint ({type(err).__name__}: {err})."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise ValueError(
            f"load_checkpoint: {os.fspath(path)!r} is not a checkpoint written by "
            "numpyro_ebm.save_checkpoint (no numpyro_ebm manifest)."
        )
    if payload.get("version") != _VERSION:
        raise ValueError(
            f"load_checkpoint: {os.fspath(path)!r} has format version {payload.get('version')!r}; "
            f"this numpyro_ebm reads version {_VERSION}."
        )
    return payload


def load_checkpoint(path: str | os.PathLike, like: Any = None) -> Any:
    """Load what :func:`save_checkpoint` wrote. Never runs code: a pickle is refused.

    :param path: the checkpoint file.
    :param like: a template with the structure of the saved state, e.g. the ``SVIState`` that
        ``svi.init`` returns for the same model, guide, optimizer and loss. The saved leaves are
        put into its structure (the ``SVIState`` namedtuple, the optimizer's state types), after
        checking that the paths, shapes and dtypes match. ``None``: a flat dict ``{keystr path:
        leaf}``, for inspection.
    :return: the state, as JAX arrays (typed PRNG keys restored with their implementation).
    :raises ValueError: for a pickle, a file that is no checkpoint, or a ``like`` whose structure,
        shapes or dtypes differ from the saved state.

    Call ``svi.init`` on the ``SVI`` object before ``svi.run(..., init_state=state)`` or
    ``svi.update``: ``init`` sets up its parameter transforms (the template comes from it).
    """
    payload = _read_checkpoint(path)
    paths = [payload["paths"][str(i)] for i in range(len(payload["paths"]))]
    leaves = [_decode_leaf(p, payload["leaves"][str(i)]) for i, p in enumerate(paths)]
    if like is None:
        return dict(zip(paths, leaves))
    template, treedef = jax.tree_util.tree_flatten_with_path(like)
    like_paths = [jax.tree_util.keystr(p) for p, _ in template]
    if like_paths != paths:
        extra = sorted(set(paths) - set(like_paths))
        missing = sorted(set(like_paths) - set(paths))
        raise ValueError(
            "load_checkpoint: `like` does not have the structure of the saved state: the "
            f"checkpoint has {len(paths)} leaves, `like` {len(like_paths)}; only in the "
            f"checkpoint: {extra[:5]}, only in `like`: {missing[:5]}. Build `like` with the same "
            "model, guide, optimizer and loss (`svi.init(...)`)."
        )
    for p, leaf, (_, want) in zip(paths, leaves, template):
        if _describe(leaf) != _describe(want):
            raise ValueError(
                f"load_checkpoint: the leaf at {p} is {_describe(leaf)} in the checkpoint but "
                f"{_describe(want)} in `like`.{_hint_for(p, leaf, want)}"
            )
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _hint_for(path: str, saved, wanted) -> str:
    """What a shape mismatch at ``path`` most likely means, in the user's terms."""
    if "['pcd_chains']" in path and np.ndim(saved) and np.ndim(wanted):
        return (
            f" These are the persistent chains: the checkpoint holds {np.shape(saved)[0]} of them "
            f"(num_chains, or buffer_size when a replay buffer is set), `like` "
            f"{np.shape(wanted)[0]}; build `like` with the PCD options of the saved run."
        )
    if path.startswith(".optim_state"):
        return " A parameter of the model has another shape: `like` comes from another model."
    return ""


def _describe(x) -> str:
    """``"float32[3, 2]"``, ``"key<threefry2x32>[]"``, or the Python type of a scalar."""
    if _is_typed_key(x):
        return f"key<{jax.random.key_impl(x)}>{list(x.shape)}"
    if hasattr(x, "dtype") and hasattr(x, "shape"):
        return f"{np.dtype(x.dtype).name}{list(x.shape)}"
    return type(x).__name__
