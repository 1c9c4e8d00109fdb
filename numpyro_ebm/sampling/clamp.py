r"""Clamped sampling: draw part of an EBM's variables with the rest held fixed.

With a boolean ``mask`` (True = clamped) and ``values`` for the clamped coordinates, the
conditional of the free coordinates :math:`x_F` given :math:`x_C = v` is

.. math::

    p(x_F \mid x_C = v) \propto \exp\big(-E(x_F, x_C = v)\big),

the EBM's own energy evaluated at the merged configuration (:math:`Z` cancels). Two ways:

* :func:`clamp` turns a log density or an :class:`~numpyro_ebm.Unnormalized` site into the
  density of the **free coordinates only** (a flat vector of ``num_free`` entries): sample it with
  any kernel (``sample_chains``, NUTS, MALA) or use the distribution as a site of a NumPyro model
  (observing part of an EBM's event); :func:`embed` puts draws back into full configurations.
* :func:`clamped_kernel` / :func:`clamped_block_gibbs`: a model's exact block Gibbs sampler over
  **full** configurations whose clamped coordinates are reset to ``values`` after every block
  draw (Ising, GraphIsing, Potts colour classes, the RBM's visible layer): exact because the
  coordinates of each block are conditionally independent given the others, so redrawing a block
  and resetting its clamped coordinates draws the free ones from their conditional.

**Example** (inpainting the bottom half of an RBM's visible vector)

.. code-block:: python

    mask = jnp.arange(rbm.num_visible) < rbm.num_visible // 2      # top half known
    algorithm = clamped_kernel(rbm, params, mask, v_known)
    init = jnp.where(mask, v_known, 0.0) * jnp.ones((64, 1))
    res = numpyro_ebm.sample_chains(jax.random.key(0), None, algorithm, init, 200)
    res.positions                                               # top half == v_known
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax.numpy as jnp
import numpy as np
from blackjax.base import SamplingAlgorithm
from numpyro.distributions import constraints

from numpyro_ebm.distribution import Unnormalized
from numpyro_ebm.sampling.block_gibbs import block_gibbs

__all__ = ["clamp", "clamped_block_gibbs", "clamped_kernel", "embed"]


def _check_mask(caller, mask, event_shape=None):
    try:
        m = np.asarray(mask)
    except Exception as err:  # noqa: BLE001 - re-raised naming the argument
        raise TypeError(f"{caller}: `mask` must be a concrete boolean array.") from err
    if m.dtype != bool:
        raise TypeError(f"{caller}: `mask` must be a boolean array (True = clamped), got dtype "
                        f"{m.dtype}.")
    if event_shape is not None and m.shape != tuple(event_shape):
        raise ValueError(f"{caller}: `mask` has shape {m.shape}; expected the event shape "
                         f"{tuple(event_shape)} (one entry per coordinate, True = clamped).")
    if m.all():
        raise ValueError(f"{caller}: `mask` clamps every coordinate; nothing is left to sample.")
    return m


def _check_values(caller, values, shape):
    values = jnp.asarray(values)
    try:
        return jnp.broadcast_to(values, shape)
    except ValueError as err:
        raise ValueError(f"{caller}: `values` of shape {values.shape} must broadcast to the "
                         f"mask's shape {shape} (the clamped values; free entries ignored).") from err


def embed(z, mask, values):
    """Full configurations from free coordinates: ``z`` ``(..., num_free)`` into the ``False``
    entries of ``mask`` (C order), ``values`` at the ``True`` ones; returns ``(..., *mask.shape)``."""
    m = np.asarray(mask, bool)
    free = np.flatnonzero(~m.ravel())
    z = jnp.asarray(z)
    if z.shape[-1:] != (free.size,):
        raise ValueError(f"embed: `z` must end in the number of free coordinates {free.size}, got "
                         f"shape {z.shape}.")
    full = jnp.broadcast_to(jnp.asarray(values, z.dtype), m.shape).ravel()
    full = jnp.broadcast_to(full, z.shape[:-1] + full.shape).at[..., free].set(z)
    return jnp.reshape(full, z.shape[:-1] + m.shape)


def clamp(logdensity_fn_or_dist, mask, values):
    r"""The conditional density of the free coordinates, :math:`x_F \mapsto \log p(x_F, x_C = v)`.

    :param logdensity_fn_or_dist: a log density ``x -> ()`` over configurations of
        ``mask.shape``, or an :class:`~numpyro_ebm.Unnormalized` (e.g. ``model.distribution(
        params)``) whose event shape is ``mask.shape``.
    :param mask: concrete boolean array, True where the coordinate is clamped.
    :param values: the clamped values, broadcastable to ``mask.shape`` (free entries ignored).
    :return: for a function, ``z -> log p(embed(z, mask, values))`` with ``z`` of shape
        ``(num_free,)``; for a distribution, an ``Unnormalized`` with event shape ``(num_free,)``
        and the same support per coordinate (use it as a NumPyro site: observing part of the EBM's
        event). Draws map back with :func:`embed`.
    :raises ValueError: a mask of the wrong shape (naming the expected event shape), values that do
        not broadcast, a mask clamping everything.
    """
    if isinstance(logdensity_fn_or_dist, Unnormalized):
        d = logdensity_fn_or_dist
        if tuple(d.batch_shape) != ():
            raise ValueError("clamp: the distribution must have batch_shape (); clamp before "
                             "putting it under a plate.")
        m = _check_mask("clamp", mask, d.event_shape)
        vals = _check_values("clamp", values, m.shape)
        support = d.support
        while isinstance(support, constraints.independent):
            support = support.base_constraint
        energy_fn = d.energy_fn
        num_free = int((~m).sum())
        return Unnormalized(lambda z: energy_fn(embed(z, m, vals)), (num_free,), support)
    if not callable(logdensity_fn_or_dist):
        raise TypeError("clamp: the first argument must be a log density function or an "
                        f"Unnormalized distribution, got {logdensity_fn_or_dist!r}.")
    m = _check_mask("clamp", mask)
    vals = _check_values("clamp", values, m.shape)
    fn = logdensity_fn_or_dist
    return lambda z: fn(embed(z, m, vals))


def _reset(mask, values):
    def reset(x):
        return jnp.where(mask, values.astype(x.dtype), x)

    return reset


def clamped_block_gibbs(logdensity_fn: Callable, conditional_samplers: Sequence[Callable], mask,
                        values) -> SamplingAlgorithm:
    r""":func:`numpyro_ebm.block_gibbs` with the coordinates of ``mask`` held at ``values``: every
    block draw is followed by a reset of the clamped coordinates.

    Exact for the conditional :math:`p(x_F \mid x_C = v)` when the coordinates of each block are
    conditionally independent given the rest (colour classes of a graph, layers of an RBM): the
    draw of a block's free coordinates then does not depend on its clamped ones.

    :param logdensity_fn: :math:`\log p(x)` of full configurations (reported only).
    :param conditional_samplers: ``(rng_key, x) -> x`` per block, as for ``block_gibbs``.
    :param mask: boolean array of the configuration's shape, True = clamped.
    :param values: the clamped values (broadcastable to ``mask.shape``).
    :return: a ``SamplingAlgorithm`` over full configurations ``(..., *mask.shape)``; start it at
        configurations whose clamped entries hold ``values``.
    """
    m = _check_mask("clamped_block_gibbs", mask)
    vals = _check_values("clamped_block_gibbs", values, m.shape)
    reset = _reset(jnp.asarray(m), vals)
    samplers = [lambda key, x, s=s: reset(s(key, x)) for s in conditional_samplers]
    algorithm = block_gibbs(logdensity_fn, samplers)

    def init(position, rng_key=None):
        return algorithm.init(reset(jnp.asarray(position)))

    return SamplingAlgorithm(init, algorithm.step)


def clamped_kernel(model, params, mask, values) -> SamplingAlgorithm:
    r"""A model's exact block Gibbs sampler of :math:`p(x_F \mid x_C = v)` over full
    configurations (clamped entries reset to ``values`` after every block draw; see
    :func:`clamped_block_gibbs`).

    :param model: an ``RBM`` / ``GaussianBernoulliRBM`` (blocks: hidden given visible, then
        visible given hidden), or a model with ``block_conditionals(params)`` (``Ising``,
        ``GraphIsing``, ``Potts``: one block per colour class).
    :param params: the model's parameters.
    :param mask: boolean array of the model's event shape, True = clamped.
    :param values: the clamped values.
    """
    from numpyro_ebm.models.rbm import RBMBase

    if not (isinstance(model, RBMBase) or callable(getattr(model, "block_conditionals", None))):
        raise TypeError(
            f"clamped_kernel: {model!r} has no block Gibbs structure to clamp (an RBM or a model "
            "with `block_conditionals`); use `clamp(model.distribution(params), mask, values)` "
            "with any kernel instead."
        )
    m = _check_mask(f"clamped_kernel({model!r})", mask, tuple(model.event_shape))
    if isinstance(model, RBMBase):
        model.check_params(params)

        def sweep(rng_key, v):  # h ~ p(h | v), v ~ p(v | h): the visible units are independent
            return model.gibbs_sweep(rng_key, params, v)[0].astype(v.dtype)

        samplers = [sweep]
    else:
        samplers = model.block_conditionals(params)
    return clamped_block_gibbs(lambda x: model.logdensity(params, x), samplers, m, values)

