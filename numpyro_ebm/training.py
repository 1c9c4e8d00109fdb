"""Training robustness around ``numpyro.infer.SVI``: a NaN guard and checkpoints.

Nothing here replaces NumPyro's loop. Skipping non-finite updates is NumPyro's and Optax's job
(``svi.run(..., stable_update=True)``, ``optax.apply_if_finite``); these helpers make the outcome
loud (:func:`check_finite_params`, :func:`check_svi_result`) and save/restore the whole
``SVIState``, persistent chains included (:func:`save_checkpoint`, :func:`load_checkpoint`).
"""

from __future__ import annotations

import os
import pickle
import warnings
from typing import Any, NamedTuple

import jax
import numpy as np
import optax

__all__ = ["check_finite_params", "check_svi_result", "save_checkpoint", "load_checkpoint"]

_HINT = (
    "Training diverged. Likely causes: a sampler step_size too large for the energy (reduce the "
    "kernel's step_size), a learning rate too large, or energies growing without bound (set "
    "`alpha`, e.g. 0.1, on a contrastive estimator). Train with `svi.run(..., "
    "stable_update=True)` or `optax.apply_if_finite(optimizer, max_consecutive_errors)` to skip "
    "non-finite updates."
)


def _path_name(path) -> str:
    return "".join(
        f"[{k.key!r}]" if isinstance(k, jax.tree_util.DictKey) else jax.tree_util.keystr((k,))
        for k in path
    )


def check_finite_params(params, what: str = "params") -> None:
    """Raise ``FloatingPointError`` naming every parameter that holds NaN or inf.

    :param params: a pytree of arrays, e.g. ``svi_result.params`` or ``svi.get_params(state)``.
    :param str what: how to call ``params`` in the message.

    **Example**

    .. code-block:: python

        result = svi.run(key, 5000, data, stable_update=True)
        numpyro_ebm.check_finite_params(result.params)
    """
    bad = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        arr = np.asarray(leaf)
        if np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
            count = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            bad.append(f"{what}{_path_name(path)} ({count} of {arr.size} non-finite)")
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


def check_svi_result(svi_result, max_skipped_fraction: float = 0.1) -> None:
    """Check an ``SVIRunResult``: raise on non-finite parameters, warn on skipped updates.

    Updates skipped by ``stable_update=True`` show as NaN entries of ``svi_result.losses``;
    updates skipped by ``optax.apply_if_finite`` are counted in its optimizer state. Both are
    counted here and reported with a ``RuntimeWarning``; a ``FloatingPointError`` is raised
    when more than ``max_skipped_fraction`` of the steps were skipped (the run made little
    progress) or when a parameter is not finite.

    :param svi_result: what ``svi.run`` returned.
    :param float max_skipped_fraction: the fraction of skipped steps above which to raise.
    :return: ``None``.
    """
    check_finite_params(svi_result.params)
    losses = np.asarray(svi_result.losses)
    num_steps = max(losses.size, 1)
    skipped_nan = int(np.count_nonzero(~np.isfinite(losses)))
    optim_state = svi_result.state.optim_state if svi_result.state is not None else None
    skipped = max(skipped_nan, _skipped_by_optax(optim_state))
    if not skipped:
        return
    message = (
        f"{skipped} of {num_steps} training steps had a non-finite loss or gradient and were "
        "skipped (the parameters stayed finite)."
    )
    if skipped > max_skipped_fraction * num_steps:
        raise FloatingPointError(f"{message} {_HINT}")
    warnings.warn(f"{message} {_HINT}", RuntimeWarning, stacklevel=2)


# --------------------------------------------------------------------------------------------
# checkpoints


class _Key(NamedTuple):
    """A typed JAX PRNG key as plain data (``jax.random.key_data``) plus its implementation."""

    impl: str
    data: np.ndarray


def _is_typed_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_host(tree):
    def leaf(x):
        if _is_typed_key(x):
            return _Key(str(jax.random.key_impl(x)), np.asarray(jax.random.key_data(x)))
        if isinstance(x, jax.Array):
            return np.asarray(x)
        return x

    return jax.tree.map(leaf, tree)


def _from_host(tree):
    def leaf(x):
        if isinstance(x, _Key):
            return jax.random.wrap_key_data(jax.numpy.asarray(x.data), impl=x.impl)
        if isinstance(x, np.ndarray):
            return jax.numpy.asarray(x)
        return x

    return jax.tree.map(leaf, tree, is_leaf=lambda x: isinstance(x, _Key))


def save_checkpoint(path: str | os.PathLike, svi_state: Any) -> None:
    """Save an ``SVIState`` (parameters, optimizer state, mutable state such as PCD chains and
    replay buffer, and the PRNG key) to ``path`` with ``pickle``.

    Resuming from it continues the run exactly: ``svi.run(key, n, data, init_state=state)``
    gives bit-for-bit what the uninterrupted run would have (the key inside the state drives
    the steps; the ``key`` passed to ``run`` is then unused).

    **Example**

    .. code-block:: python

        result = svi.run(key, 1000, data)
        numpyro_ebm.save_checkpoint("ckpt.pkl", result.state)
        # later, in a new process: build the same model/guide/optimizer/loss, then
        svi = SVI(model, pcd.guide, optim, loss=pcd)
        svi.init(key, data)                       # sets up svi's parameter transforms
        state = numpyro_ebm.load_checkpoint("ckpt.pkl")
        result = svi.run(key, 1000, data, init_state=state)
    """
    with open(path, "wb") as f:
        pickle.dump(_to_host(svi_state), f, protocol=pickle.HIGHEST_PROTOCOL)


def load_checkpoint(path: str | os.PathLike) -> Any:
    """Load what :func:`save_checkpoint` wrote: the ``SVIState``, as JAX arrays.

    Only load files you trust: this uses ``pickle``. Call ``svi.init`` on the ``SVI`` object
    before passing the state to ``svi.run(..., init_state=state)`` or ``svi.update``: ``init``
    sets up its parameter transforms.
    """
    with open(path, "rb") as f:
        return _from_host(pickle.load(f))
