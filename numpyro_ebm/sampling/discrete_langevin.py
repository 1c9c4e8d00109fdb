r"""Discrete Langevin proposals (Zhang, Liu and Liu 2022, "A Langevin-like sampler for discrete
distributions"): DMALA (Metropolis-adjusted) and DULA (unadjusted).

With :math:`f = \log p` differentiable in a relaxation of :math:`x` and a step size
:math:`\alpha > 0`, every site is redrawn *at once*, independently, from

.. math::

    q(x'_i \mid x) \propto \exp\Big(\tfrac12 \nabla f(x)_i \cdot (x'_i - x_i)
        - \frac{\lVert x'_i - x_i \rVert^2}{2\alpha}\Big),
    \qquad q(x' \mid x) = \prod_i q(x'_i \mid x),

the discrete analogue of a Langevin step (a first-order Taylor term plus a proximity term).
DMALA accepts :math:`x'` with probability
:math:`\min\{1,\ e^{f(x') - f(x)}\, q(x \mid x') / q(x' \mid x)\}` and leaves :math:`p` exactly
invariant; DULA always moves and is biased, the bias vanishing as :math:`\alpha \to 0` (at the
price of fewer moves).

Two kinds of site:

* ``values=(v_1, ..., v_K)`` (default ``(0, 1)``; ``(-1, 1)`` for spins): ordinal sites, the
  position is a float array of any shape with entries in ``values``, ``logdensity_fn`` takes it,
  and :math:`x'_i - x_i = v_k - x_i` is a number.
* ``num_categories=K``: categorical sites, the position is an integer array ``x`` of shape ``S``
  with entries in ``0..K-1``, and ``logdensity_fn`` takes its one-hot embedding, a float array
  ``(*S, K)`` (differentiated there): with :math:`g = \nabla_y f(y)`,
  :math:`\log q(x'_i = k \mid x) = \tfrac12 (g_{ik} - g_{i x_i}) - [k \ne x_i]/\alpha` + const
  (:math:`\lVert e_k - e_{x_i} \rVert^2 = 2`).

``discrete_langevin`` is a ``blackjax.GenerateSamplingAPI``; ``discrete_langevin.init`` and
``discrete_langevin.build_kernel`` are the low-level pieces.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax import GenerateSamplingAPI
from blackjax.base import SamplingAlgorithm

from numpyro_ebm._validation import check_float
from numpyro_ebm.sampling.chains import bind_algorithm
from numpyro_ebm.sampling.discrete import (
    bind_categorical,
    check_array_position,
    check_in_values,
    check_values,
    metropolis_hastings_accept,
    onehot_value_and_grad,
)

__all__ = [
    "DiscreteLangevinInfo",
    "DiscreteLangevinState",
    "as_top_level_api",
    "build_kernel",
    "discrete_langevin",
    "init",
    "proposal_log_probs",
]


class DiscreteLangevinState(NamedTuple):
    """State of a discrete Langevin chain.

    :ivar position: the configuration (``values`` sites: floats; categorical: integers).
    :ivar logdensity: :math:`f` at ``position``.
    :ivar logdensity_grad: :math:`\\nabla f` (shape of the position; ``(*shape, K)`` for
        categorical sites, the gradient in the one-hot embedding).
    """

    position: jax.Array
    logdensity: jax.Array
    logdensity_grad: jax.Array


class DiscreteLangevinInfo(NamedTuple):
    """Information on one discrete Langevin step.

    :ivar acceptance_rate: Metropolis-Hastings acceptance probability (1 for DULA).
    :ivar is_accepted: whether the proposal was taken (always for DULA).
    :ivar flip_rate: fraction of sites whose value changed in the step.
    """

    acceptance_rate: jax.Array
    is_accepted: jax.Array
    flip_rate: jax.Array


def init(position, logdensity_fn: Callable, num_categories=None) -> DiscreteLangevinState:
    """Initial state: value and gradient of ``logdensity_fn`` at ``position`` (at its one-hot
    embedding for ``num_categories=K``)."""
    if num_categories is None:
        logdensity, grad = jax.value_and_grad(logdensity_fn)(position)
    else:
        logdensity, grad = onehot_value_and_grad(logdensity_fn, position, num_categories)
    return DiscreteLangevinState(position, logdensity, grad)


def _check_step_size(step_size):
    if isinstance(step_size, jax.core.Tracer):
        return step_size
    return check_float("step_size", step_size, positive=True)


def proposal_log_probs(index, grad, step_size, values=None):
    r"""The ``(*shape, K)`` log-probabilities :math:`\log q(x'_i = v_k \mid x)` of each site's
    next value, given each site's current value index ``index`` (shape ``S``) and
    :math:`\nabla f(x)` (``S`` for ordinal ``values``; ``(*S, K)`` for categorical sites, when
    ``values`` is ``None``)."""
    if values is None:
        num_k = grad.shape[-1]
        current = jnp.take_along_axis(grad, index[..., None], -1)
        moved = (jnp.arange(num_k) != index[..., None]).astype(grad.dtype)
        logits = 0.5 * (grad - current) - moved / step_size
    else:
        table = jnp.asarray(values, grad.dtype)
        diff = table - table[index][..., None]
        logits = 0.5 * grad[..., None] * diff - diff**2 / (2.0 * step_size)
    return jax.nn.log_softmax(logits, -1)


def build_kernel(step_size, values=None, num_categories=None, adjusted: bool = True):
    """Build ``kernel(rng_key, state, logdensity_fn) -> (DiscreteLangevinState,
    DiscreteLangevinInfo)``; arguments as in :func:`as_top_level_api`."""
    step_size = _check_step_size(step_size)
    vals = check_values("discrete_langevin", values, num_categories)
    if not isinstance(adjusted, bool):
        raise TypeError(f"discrete_langevin: `adjusted` must be a bool, got {adjusted!r}.")
    categorical = num_categories is not None
    num_k = vals.size

    def site_log_probs(index, grad):
        return proposal_log_probs(index, grad, step_size, None if categorical else vals)

    def to_index(position):
        if categorical:
            return position.astype(jnp.int32)
        return jnp.argmax(position[..., None] == jnp.asarray(vals, position.dtype), -1)

    def from_index(index, like):
        if categorical:
            return index.astype(like.dtype)
        return jnp.asarray(vals, like.dtype)[index]

    def kernel(rng_key, state: DiscreteLangevinState, logdensity_fn):
        key_prop, key_accept = jax.random.split(rng_key)
        index = to_index(state.position)
        log_q = site_log_probs(index, state.logdensity_grad)
        new_index = jax.random.categorical(key_prop, log_q, -1)
        proposal = from_index(new_index, state.position)
        new = init(proposal, logdensity_fn, num_k if categorical else None)
        changed = jnp.mean((new_index != index).astype(jnp.result_type(float)))
        if not adjusted:
            one = jnp.ones((), jnp.result_type(float))
            return new, DiscreteLangevinInfo(one, jnp.asarray(True), changed)
        log_fwd = jnp.sum(jnp.take_along_axis(log_q, new_index[..., None], -1))
        log_q_back = site_log_probs(new_index, new.logdensity_grad)
        log_bwd = jnp.sum(jnp.take_along_axis(log_q_back, index[..., None], -1))
        log_ratio = new.logdensity - state.logdensity + log_bwd - log_fwd
        state, accept_prob, accepted = metropolis_hastings_accept(key_accept, log_ratio, new, state)
        return state, DiscreteLangevinInfo(accept_prob, accepted, jnp.where(accepted, changed, 0.0))

    return kernel


def as_top_level_api(
    logdensity_fn: Callable,
    step_size,
    values=None,
    *,
    num_categories=None,
    adjusted: bool = True,
) -> SamplingAlgorithm:
    r"""Discrete Langevin sampler as a ``blackjax.SamplingAlgorithm``: DMALA
    (``adjusted=True``) or DULA (``adjusted=False``); see the module docstring for the proposal.

    :param logdensity_fn: :math:`\log p = -E` up to a constant, differentiable: of the position
        (``values`` sites) or of its one-hot embedding ``(*shape, K)`` (``num_categories=K``).
    :param float step_size: :math:`\alpha > 0`. Small: few sites move per step; large: many
        move but (DMALA) fewer proposals are accepted. Values near 0.1-1 for unit-scale
        couplings; tune for an acceptance rate around 0.5-0.6 (Zhang et al. 2022).
    :param values: the ordinal values of a site, default ``(0, 1)``; ``(-1, 1)`` for spins.
    :param int num_categories: alternatively ``K`` categorical values (integer positions,
        one-hot log density).
    :param bool adjusted: Metropolis-Hastings correction (DMALA, exact); ``False`` gives DULA
        (biased, always moves). Both cost one value-and-gradient per step (at the proposal; the
        current one is kept in the state); DMALA adds the reverse proposal's log-probability.
    :return: ``SamplingAlgorithm(init, step)`` with :class:`DiscreteLangevinState` and
        :class:`DiscreteLangevinInfo`.

    With :func:`~numpyro_ebm.sample_chains` both take the usual factory
    (``functools.partial(discrete_langevin, step_size=0.3, values=(-1, 1))``, or
    ``num_categories=3`` with integer positions and a one-hot log density: ``sample_chains``
    checks the density through the one-hot map), or the built algorithm with
    ``logdensity_fn=None``.

    **Example**

    .. code-block:: python

        potts = Potts(3, shape=(16, 16)); params = potts.init_params(beta=1.0)
        dmala = numpyro_ebm.discrete_langevin(
            lambda y: potts.logdensity_onehot(params, y), step_size=0.5, num_categories=3)
        result = numpyro_ebm.sample_chains(jax.random.key(0), None, dmala,
                                           potts.init_states(jax.random.key(1), 64), 1000)
    """
    vals = check_values("discrete_langevin", values, num_categories)
    kernel = build_kernel(
        step_size, vals if num_categories is None else None, num_categories, adjusted
    )
    if num_categories is not None:
        return bind_categorical("discrete_langevin", init, kernel, logdensity_fn, int(vals.size))

    def check_position(position):
        position = check_array_position("discrete_langevin", position)
        if not jnp.issubdtype(position.dtype, jnp.floating):
            raise TypeError(
                "discrete_langevin: with `values`, the position must be a float array (the log "
                f"density is differentiated in x), got dtype {position.dtype}; for categorical "
                "sites pass `num_categories=K` and integer positions."
            )
        check_in_values("discrete_langevin", position, np.asarray(vals))
        return position

    return bind_algorithm(init, kernel, logdensity_fn, check_position)


discrete_langevin = GenerateSamplingAPI(as_top_level_api, init, build_kernel)
