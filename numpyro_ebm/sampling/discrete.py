r"""Shared pieces of the discrete samplers and of the discrete evaluators.

* :func:`check_values`: the states one discrete unit can take (``values=(0, 1)``, ``(-1, 1)``,
  or ``num_categories=K`` for ``0, ..., K-1``), checked once for every caller (:func:`gibbs
  <numpyro_ebm.sampling.gibbs.gibbs>`, :func:`gibbs_with_gradients
  <numpyro_ebm.sampling.gibbs_with_gradients.gibbs_with_gradients>`,
  :func:`~numpyro_ebm.evaluation.partition.logz_exact`,
  :func:`~numpyro_ebm.evaluation.likelihood.pseudo_log_likelihood`).
* :func:`check_array_position`, :func:`check_in_values`: a chain's position is one array whose
  entries are allowed values.
* :func:`flip_rate`: the fraction of entries a transition changed, what the Gibbs kernels report.
* :class:`GibbsInfo`: the info of a Gibbs transition (single-site or block).
* :func:`onehot_value_and_grad`, :func:`check_categorical_position`: the one-hot convention of
  the gradient-based categorical samplers (an integer position ``x`` of shape ``S``, a log
  density of the one-hot array ``(*S, K)``).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_ebm._validation import check_in_set, check_int
from numpyro_ebm.sampling.chains import bind_algorithm

__all__ = [
    "GibbsInfo",
    "bind_categorical",
    "check_array_position",
    "check_categorical_position",
    "check_in_values",
    "check_values",
    "flip_rate",
    "metropolis_hastings_accept",
    "one_hot",
    "onehot_value_and_grad",
]


class GibbsInfo(NamedTuple):
    """Information on one Gibbs step (single-site or block).

    :ivar acceptance_rate: the flip rate again (Gibbs draws are always accepted; what is worth
        monitoring is how often a value changes), so :func:`~numpyro_ebm.sample_chains` reports it.
    :ivar flip_rate: fraction of the site updates in the step that changed the site's value.
    """

    acceptance_rate: jax.Array
    flip_rate: jax.Array


def check_values(caller: str, values, num_categories=None) -> np.ndarray:
    """The allowed states of one unit as a 1-D NumPy array (dtype of ``values``).

    :param str caller: the public function's name, used in the error messages.
    :param values: at least two distinct finite numbers, e.g. ``(0, 1)`` or ``(-1, 1)``; ``None``
        means ``(0, 1)`` unless ``num_categories`` is given.
    :param int num_categories: alternatively ``K >= 2``, for the values ``0, ..., K-1``.
    :raises ValueError: both given, fewer than two values, repeated or non-finite values.
    :raises TypeError: ``values`` is not a sequence of numbers.
    """
    if values is not None and num_categories is not None:
        raise ValueError(
            f"{caller}: pass either `values` (the allowed values, e.g. (0, 1) or (-1, 1)) or "
            f"`num_categories` (values 0..K-1), not both; got values={values!r}, "
            f"num_categories={num_categories!r}."
        )
    if num_categories is not None:
        return np.arange(check_int("num_categories", num_categories, 2))
    if values is None:
        values = (0, 1)
    try:
        arr = np.asarray(values)
    except Exception as err:  # noqa: BLE001 - re-raised naming the argument
        raise TypeError(
            f"{caller}: `values` must be a sequence of numbers, got {values!r}."
        ) from err
    if (
        arr.ndim != 1
        or arr.size < 2
        or not np.issubdtype(arr.dtype, np.number)
        or not np.all(np.isfinite(arr))
    ):
        raise ValueError(
            f"{caller}: `values` must be a 1-D sequence of at least two finite numbers, the "
            f"states of one unit (e.g. (0, 1) or (-1, 1)); got {values!r}."
        )
    if np.unique(arr).size != arr.size:
        raise ValueError(f"{caller}: `values` must be distinct; got {values!r}.")
    return arr


def check_array_position(caller: str, position) -> jax.Array:
    """``position`` as one array (a discrete configuration), else a ``TypeError``."""
    if not isinstance(position, (jax.Array, np.ndarray)) and not jnp.isscalar(position):
        raise TypeError(
            f"{caller}: the position must be a single array (the discrete configuration), got "
            f"{type(position).__name__}; wrap several arrays into one or use `block_gibbs`."
        )
    return jnp.asarray(position)


def check_in_values(caller: str, position, values: np.ndarray) -> None:
    """Raise a ``ValueError`` when a concrete ``position`` holds entries outside ``values``."""
    check_in_set("position", position, values, caller, "Start the chains at valid configurations.")


def flip_rate(old, new) -> jax.Array:
    """Fraction of the entries of the pytrees ``old`` and ``new`` (same structure) that differ."""
    leaves_old, leaves_new = jax.tree.leaves(old), jax.tree.leaves(new)
    changed = sum(jnp.sum(a != b) for a, b in zip(leaves_old, leaves_new))
    total = sum(math.prod(jnp.shape(a)) for a in leaves_old)
    return jnp.asarray(changed, jnp.result_type(float)) / max(total, 1)


def metropolis_hastings_accept(rng_key, log_ratio, new, state):
    """Accept ``new`` over ``state`` (pytrees of one chain) with probability
    ``min(1, exp(log_ratio))`` (a NaN ratio rejects). Returns ``(state, accept_prob, accepted)``."""
    log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
    accept_prob = jnp.exp(jnp.minimum(log_ratio, 0.0))
    accepted = jax.random.uniform(rng_key) < accept_prob
    state = jax.tree.map(lambda a, b: jnp.where(accepted, a, b), new, state)
    return state, accept_prob, accepted


def one_hot(position, num_categories: int) -> jax.Array:
    """The one-hot embedding ``(*position.shape, K)`` (float) of an integer-coded categorical
    ``position``: what the gradient-based categorical samplers pass to ``logdensity_fn``."""
    return jax.nn.one_hot(jnp.asarray(position).astype(jnp.int32), num_categories)


def onehot_value_and_grad(logdensity_fn, position, num_categories: int):
    r"""``(f(y), ∇_y f(y))`` at the one-hot embedding ``y = one_hot(position, K)`` (float,
    shape ``(*position.shape, K)``) of an integer-coded categorical ``position``: the convention
    of the gradient-based categorical samplers, whose ``logdensity_fn`` takes ``y``."""
    return jax.value_and_grad(logdensity_fn)(one_hot(position, num_categories))


def bind_categorical(caller: str, init, kernel, logdensity_fn, num_categories: int):
    """The ``SamplingAlgorithm`` of a gradient-based categorical kernel: ``init(position,
    logdensity_fn, num_categories)``, integer positions checked by
    :func:`check_categorical_position`, the density checked through :func:`one_hot`."""

    def check_position(position):
        return check_categorical_position(caller, position, num_categories)

    return bind_algorithm(
        functools.partial(init, num_categories=num_categories), kernel, logdensity_fn,
        check_position, density_input=functools.partial(one_hot, num_categories=num_categories),
    )


def check_categorical_position(caller: str, position, num_categories: int) -> jax.Array:
    """A categorical position: one array (integer, or float holding integers) with entries in
    ``0, ..., K-1`` (checked when concrete)."""
    position = check_array_position(caller, position)
    if not (
        jnp.issubdtype(position.dtype, jnp.integer) or jnp.issubdtype(position.dtype, jnp.floating)
    ):
        raise TypeError(
            f"{caller}: a categorical position must hold the category indices 0..K-1 as an "
            f"integer array, got dtype {position.dtype}."
        )
    check_in_values(caller, position, np.arange(num_categories))
    return position
