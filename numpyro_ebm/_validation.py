"""Argument checks shared by the public API: fail early, name the argument, say what was expected.

Checks only run on concrete values; under ``jax.jit`` (tracers) they are skipped so that every
public function stays jittable.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """True when the values of ``x`` (an array or pytree of arrays) can be read here: it holds no
    tracer and no global array split over other processes' devices (multi-process JAX), whose
    values this process cannot fetch (a replicated one it can). Value checks are skipped
    otherwise."""
    return not any(
        isinstance(leaf, jax.core.Tracer)
        or (
            isinstance(leaf, jax.Array)
            and not leaf.is_fully_addressable
            and not leaf.is_fully_replicated
        )
        for leaf in jax.tree.leaves(x)
    )


def check_finite(name: str, x) -> None:
    """Raise ``ValueError`` naming ``name`` if a concrete pytree ``x`` holds NaN or inf."""
    if not is_concrete(x):
        return
    for leaf in jax.tree.leaves(x):
        arr = np.asarray(leaf)
        if np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise ValueError(
                f"`{name}` contains {bad} non-finite value(s) (NaN or inf); expected finite values."
            )


def check_positive(name: str, x) -> None:
    """Raise ``ValueError`` if a concrete scalar/array ``x`` is not strictly positive."""
    if x is None or not is_concrete(x):
        return
    try:
        positive = np.all(np.asarray(x) > 0)
    except TypeError as err:
        raise TypeError(f"`{name}` must be a number > 0, got {x!r}.") from err
    if not positive:
        raise ValueError(f"`{name}` must be > 0, got {x!r}.")


def check_float(name: str, x, *, minimum=None, maximum=None, positive: bool = False) -> float:
    """Return ``float(x)`` or raise naming ``name``: ``TypeError`` unless ``x`` is a real number
    (not a bool), ``ValueError`` unless it is finite, ``>= minimum``, ``<= maximum`` and, with
    ``positive``, ``> 0``."""
    bounds = []
    if positive:
        bounds.append("> 0")
    if minimum is not None:
        bounds.append(f">= {minimum}")
    if maximum is not None:
        bounds.append(f"<= {maximum}")
    expected = "a finite float" + (f" {' and '.join(bounds)}" if bounds else "")
    if isinstance(x, bool):
        raise TypeError(f"`{name}` must be {expected}, got {x!r}.")
    try:
        value = float(x)
    except (TypeError, ValueError) as err:
        raise TypeError(f"`{name}` must be {expected}, got {x!r}.") from err
    if (
        not math.isfinite(value)
        or (positive and not value > 0)
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
    ):
        raise ValueError(f"`{name}` must be {expected}, got {x!r}.")
    return value


def check_int(name: str, x, minimum: int = 0) -> int:
    """Return ``int(x)`` or raise if ``x`` is not an integer >= ``minimum``."""
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"`{name}` must be an int >= {minimum}, got {x!r}.")
    if x < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {x!r}.")
    return int(x)


def leading_size(name: str, tree) -> int:
    """The common leading-axis size of every leaf of ``tree`` (the chain axis)."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError(f"`{name}` is empty; expected a pytree of arrays with a leading axis.")
    sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) > 0 else None for leaf in leaves}
    if None in sizes or len(sizes) != 1:
        raise ValueError(
            f"`{name}` must be a pytree whose leaves all share a leading (chain) axis; "
            f"got leaf shapes {[jnp.shape(leaf) for leaf in leaves]}."
        )
    return sizes.pop()


def check_in_set(name: str, x, values, caller: str = "", hint: str = "") -> None:
    """Raise ``ValueError`` naming ``name`` (and ``caller``) when a concrete ``x`` holds entries
    outside ``values`` (NaN included), with their count, a few examples and ``hint``."""
    if x is None or not is_concrete(x):
        return
    arr = np.asarray(x)
    allowed = np.asarray(values)
    ok = np.isin(arr, allowed)
    if not ok.all():
        bad = arr[~ok].ravel()
        prefix = f"{caller}: " if caller else ""
        raise ValueError(
            f"{prefix}`{name}` holds {bad.size} value(s) outside the allowed values "
            f"{allowed.tolist()} (e.g. {bad[:3].tolist()}); expected every entry in "
            f"{allowed.tolist()}.{' ' + hint if hint else ''}"
        )


def check_rng_key(rng_key, name: str = "rng_key"):
    """Return ``rng_key`` if it is one JAX PRNG key (typed ``jax.random.key``, or a raw
    ``uint32[2]`` key from ``jax.random.PRNGKey``), else raise ``TypeError`` naming the argument:
    an ``int`` seed, ``None`` or a batch of keys is refused. Traced keys pass unchecked."""
    if rng_key is None:
        raise TypeError(f"`{name}` is required: pass a JAX key, e.g. `jax.random.key(0)`.")
    if isinstance(rng_key, jax.core.Tracer):
        return rng_key
    if isinstance(rng_key, jax.Array):
        if jax.dtypes.issubdtype(rng_key.dtype, jax.dtypes.prng_key):
            if rng_key.shape == ():
                return rng_key
            raise TypeError(
                f"`{name}` must be one JAX key, got a batch of keys of shape {rng_key.shape}; "
                "pass one key (e.g. `jax.random.key(0)`), not `jax.random.split(...)`."
            )
        if rng_key.dtype == jnp.uint32 and rng_key.shape == (2,):
            return rng_key
    raise TypeError(
        f"`{name}` must be a JAX key such as `jax.random.key(0)` (not an int seed), got "
        f"{rng_key!r}."
    )
