r"""Gibbs samplers for discrete variables, BlackJAX-shaped (BlackJAX has none: blackjax#835).

Three kernels, each with ``init``, ``build_kernel`` and a top-level factory returning a
``blackjax.base.SamplingAlgorithm``, so that they plug into :func:`numpyro_ebm.sample_chains`,
``numpyro_ebm.BlackJAXKernel`` and the contrastive-divergence losses like any BlackJAX kernel:

* :func:`gibbs`: single-site Gibbs for **any** log density over binary or categorical variables.
  For the chosen site :math:`i` it evaluates the log density at every allowed value
  :math:`v_1, \dots, v_K` (all other sites fixed) and draws from the full conditional

  .. math::

      p(x_i = v_k \mid x_{-i}) = \operatorname{softmax}_k\, \log p(x_{-i}, x_i = v_k),

  which only needs energy *differences* (:math:`Z` cancels). Random scan (sites uniformly at
  random) or systematic scan (sites in order). One step updates ``num_sites_per_step`` sites
  (default: as many as there are sites, one sweep).
* :func:`block_gibbs`: block Gibbs for structures whose variables split into conditionally
  independent blocks (checkerboard lattices, RBM layers): a step applies the given block
  conditional samplers in turn, each redrawing a whole block in parallel given the rest.
  :class:`numpyro_ebm.models.Ising` provides a fast checkerboard kernel of the same shape.
* :func:`gibbs_with_gradients`: Gibbs-with-gradients (Grathwohl et al. 2021) for binary
  variables with a differentiable log density :math:`f`: the first-order estimate of the change
  of :math:`f` from flipping site :math:`i`, :math:`\tilde d_i = \partial_i f(x)\,(\bar x_i - x_i)`
  (:math:`\bar x_i` the other value), gives the proposal :math:`q(i \mid x) =
  \operatorname{softmax}(\tilde d / 2)_i`; the flip is accepted with the Metropolis-Hastings
  probability :math:`\min\{1, e^{f(x') - f(x)}\, q(i \mid x') / q(i \mid x)\}` (exact).

Every kernel reports ``Info.flip_rate``: the fraction of site updates that changed a value; the
Gibbs kernels also report it as ``acceptance_rate`` so :func:`sample_chains` shows it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.base import SamplingAlgorithm

from numpyro_ebm._validation import check_int, is_concrete

__all__ = [
    "GibbsState",
    "GibbsInfo",
    "BlockGibbsState",
    "GWGState",
    "GWGInfo",
    "gibbs",
    "block_gibbs",
    "gibbs_with_gradients",
    "init",
    "build_kernel",
]


# ----------------------------------------------------------------------------- states and infos


class GibbsState(NamedTuple):
    """State of a single-site Gibbs chain.

    :ivar position: the current configuration, an array of any shape with values in ``values``.
    :ivar logdensity: :math:`\\log p` at ``position`` (up to a constant), a scalar.
    :ivar site: int32 scalar, the next site of a systematic scan (flat index; unused by a random
        scan).
    """

    position: jax.Array
    logdensity: jax.Array
    site: jax.Array


class GibbsInfo(NamedTuple):
    """Information on one Gibbs step.

    :ivar acceptance_rate: the flip rate again (Gibbs draws are always accepted; what is worth
        monitoring is how often a value changes), so :func:`sample_chains` reports it.
    :ivar flip_rate: fraction of the site updates in the step that changed the site's value.
    """

    acceptance_rate: jax.Array
    flip_rate: jax.Array


class BlockGibbsState(NamedTuple):
    """State of a block Gibbs chain: the position (any pytree) and its log density."""

    position: object
    logdensity: jax.Array


class GWGState(NamedTuple):
    """State of a Gibbs-with-gradients chain: position, log density and its gradient."""

    position: jax.Array
    logdensity: jax.Array
    logdensity_grad: jax.Array


class GWGInfo(NamedTuple):
    """Information on one Gibbs-with-gradients step.

    :ivar acceptance_rate: Metropolis-Hastings acceptance probability of the proposed flip.
    :ivar is_accepted: whether the flip was taken.
    :ivar flip_rate: fraction of proposed flips taken in the step (``is_accepted`` as a float when
        ``num_flips=1``).
    """

    acceptance_rate: jax.Array
    is_accepted: jax.Array
    flip_rate: jax.Array


# ----------------------------------------------------------------------------- argument checks


def _values_array(values, num_categories) -> np.ndarray:
    if values is not None and num_categories is not None:
        raise ValueError(
            "gibbs: pass either `values` (the allowed values, e.g. (0, 1) or (-1, 1)) or "
            f"`num_categories` (values 0..K-1), not both; got values={values!r}, "
            f"num_categories={num_categories!r}."
        )
    if num_categories is not None:
        k = check_int("num_categories", num_categories, 2)
        return np.arange(k)
    if values is None:
        values = (0, 1)
    try:
        arr = np.asarray(values)
    except Exception as err:  # noqa: BLE001
        raise TypeError(f"`values` must be a sequence of numbers, got {values!r}.") from err
    if arr.ndim != 1 or arr.size < 2 or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(
            f"`values` must be a 1-D sequence of at least two numbers (e.g. (0, 1)), got {values!r}."
        )
    if len(np.unique(arr)) != arr.size:
        raise ValueError(f"`values` must be distinct, got {values!r}.")
    return arr


def _check_array_position(name: str, position) -> jax.Array:
    if not isinstance(position, (jax.Array, np.ndarray)) and not jnp.isscalar(position):
        raise TypeError(
            f"{name}: the position must be a single array (the discrete configuration), got "
            f"{type(position).__name__}; wrap several arrays into one or use `block_gibbs`."
        )
    return jnp.asarray(position)


def _check_in_values(name: str, position, values: np.ndarray) -> None:
    if not is_concrete(position):
        return
    arr = np.asarray(position)
    ok = np.isin(arr, values)
    if not ok.all():
        bad = arr[~ok].ravel()[:3]
        raise ValueError(
            f"{name}: the position holds values outside the allowed values {values.tolist()} "
            f"(e.g. {bad.tolist()}); start the chains at valid configurations."
        )


# ----------------------------------------------------------------------------- single-site Gibbs


def init(position, logdensity_fn: Callable) -> GibbsState:
    """Initial single-site Gibbs state: ``logdensity_fn(position)``, scan pointer at site 0."""
    position = jnp.asarray(position)
    return GibbsState(position, jnp.asarray(logdensity_fn(position)), jnp.zeros((), jnp.int32))


def build_kernel(values=None, num_categories=None, scan: str = "random", num_sites_per_step=None):
    """Build ``kernel(rng_key, state, logdensity_fn) -> (GibbsState, GibbsInfo)``.

    See :func:`gibbs` for the arguments. ``values`` are cast to the position's dtype.
    """
    vals = _values_array(values, num_categories)
    if scan not in ("random", "systematic"):
        raise ValueError(f"`scan` must be 'random' or 'systematic', got {scan!r}.")
    if num_sites_per_step is not None:
        num_sites_per_step = check_int("num_sites_per_step", num_sites_per_step, 1)
    num_values = vals.size

    def kernel(rng_key, state: GibbsState, logdensity_fn):
        position = state.position
        shape, n = position.shape, math.prod(position.shape)
        steps = n if num_sites_per_step is None else num_sites_per_step
        table = jnp.asarray(vals, dtype=position.dtype)

        def logp_flat(x_flat):
            return logdensity_fn(jnp.reshape(x_flat, shape))

        def update(carry, key):
            x, logd, site, flips = carry
            key_site, key_value = jax.random.split(key)
            if scan == "random":
                i = jax.random.randint(key_site, (), 0, n)
            else:
                i = site % n
            current = x[i]
            if num_values == 2:
                # log p at the current value is known: evaluate the other value only.
                other = jnp.where(current == table[0], table[1], table[0])
                logd_other = logp_flat(x.at[i].set(other))
                flip = jax.random.uniform(key_value) < jax.nn.sigmoid(logd_other - logd)
                new, new_logd = jnp.where(flip, other, current), jnp.where(flip, logd_other, logd)
            else:
                candidates = jnp.tile(x, (num_values, 1)).at[jnp.arange(num_values), i].set(table)
                logds = jax.vmap(logp_flat)(candidates)
                k = jax.random.categorical(key_value, logds)
                new, new_logd = table[k], logds[k]
            flips = flips + (new != current).astype(jnp.int32)
            return (x.at[i].set(new), new_logd, site + 1, flips), None

        carry = (jnp.ravel(position), state.logdensity, state.site, jnp.zeros((), jnp.int32))
        keys = jax.random.split(rng_key, steps)
        (x, logd, site, flips), _ = jax.lax.scan(update, carry, keys)
        rate = flips.astype(jnp.result_type(float)) / steps
        return GibbsState(jnp.reshape(x, shape), logd, site % n), GibbsInfo(rate, rate)

    return kernel


def _gibbs(
    logdensity_fn: Callable,
    values=None,
    *,
    num_categories=None,
    scan: str = "random",
    num_sites_per_step=None,
) -> SamplingAlgorithm:
    r"""Single-site Gibbs sampling of a discrete density, as a ``blackjax.SamplingAlgorithm``.

    :param logdensity_fn: :math:`\log p(x) = -E(x)` up to a constant, for one configuration
        ``x``: an array of any shape (e.g. ``(D,)`` or ``(H, W)``) whose entries lie in ``values``.
    :param values: the values each site can take, e.g. ``(0, 1)`` (default), ``(-1, 1)`` for spins,
        ``(0, 1, 2)``.
    :param int num_categories: alternatively ``K``, for values ``0, ..., K-1``.
    :param str scan: ``"random"`` (default; each update picks a site uniformly) or
        ``"systematic"`` (sites in flat order, the position in the scan kept in the state).
    :param int num_sites_per_step: site updates per step; default the number of sites (one sweep).
    :return: ``SamplingAlgorithm(init, step)``: ``init(position) -> GibbsState``,
        ``step(rng_key, state) -> (GibbsState, GibbsInfo)``.

    Cost: one log-density evaluation per update for two values, ``K`` for ``K`` values; this is
    the generic sampler (any energy). Structured models should use a block kernel
    (:func:`block_gibbs`, ``Ising.kernel``), which updates a whole block at once.

    **Example**

    .. code-block:: python

        W = ...  # (D, D) symmetric couplings
        logdensity = lambda x: 0.5 * x @ W @ x + b @ x          # binary units x in {0, 1}^D
        result = numpyro_ebm.sample_chains(
            jax.random.key(0), logdensity, functools.partial(numpyro_ebm.gibbs, values=(0, 1)),
            init_positions=jnp.zeros((512, D)), num_steps=200, num_samples=100)
        result.acceptance_rate  # per-chain flip rate
    """
    vals = _values_array(values, num_categories)
    kernel = build_kernel(vals, None, scan, num_sites_per_step)

    def init_fn(position, rng_key=None):
        position = _check_array_position("gibbs", position)
        _check_in_values("gibbs", position, vals)
        return init(position, logdensity_fn)

    def step_fn(rng_key, state):
        return kernel(rng_key, state, logdensity_fn)

    return SamplingAlgorithm(init_fn, step_fn)


class _GibbsAPI:
    """``gibbs(logdensity_fn, values=(0, 1), *, num_categories=None, scan='random',
    num_sites_per_step=None)``, with ``gibbs.init`` and ``gibbs.build_kernel`` attached."""

    init = staticmethod(init)
    build_kernel = staticmethod(build_kernel)
    __doc__ = _gibbs.__doc__

    def __call__(self, logdensity_fn, values=None, **kwargs) -> SamplingAlgorithm:
        return _gibbs(logdensity_fn, values, **kwargs)


gibbs = _GibbsAPI()


# ----------------------------------------------------------------------------- block Gibbs


def _flip_rate(old, new) -> jax.Array:
    """Fraction of the entries of the pytrees ``old``/``new`` that differ."""
    leaves_old, leaves_new = jax.tree.leaves(old), jax.tree.leaves(new)
    changed = sum(jnp.sum(a != b) for a, b in zip(leaves_old, leaves_new))
    total = sum(math.prod(jnp.shape(a)) for a in leaves_old)
    return jnp.asarray(changed, jnp.result_type(float)) / max(total, 1)


def _block_init(position, logdensity_fn: Callable) -> BlockGibbsState:
    return BlockGibbsState(position, jnp.asarray(logdensity_fn(position)))


def _block_build_kernel(conditional_samplers: Sequence[Callable]):
    """Build ``kernel(rng_key, state, logdensity_fn) -> (BlockGibbsState, GibbsInfo)``."""
    samplers = tuple(conditional_samplers)

    def kernel(rng_key, state: BlockGibbsState, logdensity_fn):
        keys = jax.random.split(rng_key, len(samplers))
        position = state.position
        for key, sample_block in zip(keys, samplers):
            position = sample_block(key, position)
        rate = _flip_rate(state.position, position)
        return BlockGibbsState(position, jnp.asarray(logdensity_fn(position))), GibbsInfo(rate, rate)

    return kernel


def _block_gibbs(logdensity_fn: Callable, conditional_samplers: Sequence[Callable]):
    r"""Block Gibbs sampling: redraw whole blocks from their exact conditionals, in turn.

    For variables split into blocks :math:`x = (x_{B_1}, \dots, x_{B_m})` one step draws
    :math:`x_{B_k} \sim p(x_{B_k} \mid x_{-B_k})` for :math:`k = 1, \dots, m`. When the variables
    inside a block are conditionally independent (the two colours of a checkerboard lattice, the
    visible and hidden layers of an RBM) each conditional factorizes and is drawn in parallel.

    :param logdensity_fn: :math:`\log p(x)` up to a constant, for one position; only used to report
        ``state.logdensity`` (evaluated once per step).
    :param conditional_samplers: a sequence of functions ``(rng_key, position) -> position``, the
        ``k``-th returning the position with block ``k`` redrawn from its conditional and
        everything else unchanged. ``position`` may be any pytree (e.g. ``(v, h)`` for an RBM).
    :return: ``SamplingAlgorithm(init, step)`` with ``BlockGibbsState`` and ``GibbsInfo`` (the flip
        rate: fraction of entries changed by the step).

    **Example** (a checkerboard Ising lattice through the generic kernel; ``Ising.kernel`` is the
    fused, faster version of the same chain)

    .. code-block:: python

        ising = numpyro_ebm.models.Ising((32, 32), beta=0.4)
        kernel = functools.partial(numpyro_ebm.block_gibbs,
                                   conditional_samplers=ising.block_conditionals())
        result = numpyro_ebm.sample_chains(jax.random.key(0), ising.logdensity, kernel,
                                           ising.init_spins(jax.random.key(1), 64), 500)
    """
    if isinstance(conditional_samplers, Callable) or not all(
        callable(s) for s in conditional_samplers
    ):
        raise TypeError(
            "block_gibbs: `conditional_samplers` must be a sequence of functions "
            "(rng_key, position) -> position, one per block; got "
            f"{conditional_samplers!r}."
        )
    if len(conditional_samplers) == 0:
        raise ValueError("block_gibbs: `conditional_samplers` is empty; give one per block.")
    kernel = _block_build_kernel(conditional_samplers)

    def init_fn(position, rng_key=None):
        return _block_init(position, logdensity_fn)

    def step_fn(rng_key, state):
        return kernel(rng_key, state, logdensity_fn)

    return SamplingAlgorithm(init_fn, step_fn)


class _BlockGibbsAPI:
    """``block_gibbs(logdensity_fn, conditional_samplers)``, with ``init``/``build_kernel``."""

    init = staticmethod(_block_init)
    build_kernel = staticmethod(_block_build_kernel)
    __doc__ = _block_gibbs.__doc__

    def __call__(self, logdensity_fn, conditional_samplers) -> SamplingAlgorithm:
        return _block_gibbs(logdensity_fn, conditional_samplers)


block_gibbs = _BlockGibbsAPI()


# ----------------------------------------------------------------------------- Gibbs with gradients


def _gwg_init(position, logdensity_fn: Callable) -> GWGState:
    logdensity, grad = jax.value_and_grad(logdensity_fn)(position)
    return GWGState(position, logdensity, grad)


def _gwg_build_kernel(values=(0, 1), num_flips: int = 1):
    """Build ``kernel(rng_key, state, logdensity_fn) -> (GWGState, GWGInfo)``.

    ``num_flips`` Metropolis-Hastings single-flip proposals are made per step, in sequence.
    """
    vals = _values_array(values, None)
    if vals.size != 2:
        raise ValueError(
            f"gibbs_with_gradients: `values` must hold exactly two values, got {values!r}."
        )
    num_flips = check_int("num_flips", num_flips, 1)
    low, high = float(vals[0]), float(vals[1])

    def log_proposal(x, grad):
        # first-order estimate of f(x with site i flipped) - f(x), halved: q = softmax(d / 2)
        d = grad * ((low + high) - 2.0 * x)
        return jax.nn.log_softmax(jnp.ravel(d) / 2.0)

    def one_flip(state: GWGState, key, logdensity_fn):
        key_site, key_accept = jax.random.split(key)
        x = state.position
        log_q = log_proposal(x, state.logdensity_grad)
        i = jax.random.categorical(key_site, log_q)
        x_flat = jnp.ravel(x)
        proposal = jnp.reshape(x_flat.at[i].set((low + high) - x_flat[i]), x.shape)
        new = _gwg_init(proposal, logdensity_fn)
        log_q_back = log_proposal(proposal, new.logdensity_grad)[i]
        log_ratio = new.logdensity - state.logdensity + log_q_back - log_q[i]
        log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
        accept_prob = jnp.exp(jnp.minimum(log_ratio, 0.0))
        accepted = jax.random.uniform(key_accept) < accept_prob
        state = jax.tree.map(lambda a, b: jnp.where(accepted, a, b), new, state)
        return state, (accept_prob, accepted)

    def kernel(rng_key, state: GWGState, logdensity_fn):
        keys = jax.random.split(rng_key, num_flips)
        state, (probs, accepted) = jax.lax.scan(
            lambda s, k: one_flip(s, k, logdensity_fn), state, keys
        )
        rate = jnp.mean(accepted.astype(jnp.result_type(float)))
        return state, GWGInfo(jnp.mean(probs), accepted[-1], rate)

    return kernel


def _gibbs_with_gradients(logdensity_fn: Callable, values=(0, 1), num_flips: int = 1):
    r"""Gibbs-with-gradients (Grathwohl et al. 2021) for binary variables, Metropolis-corrected.

    With :math:`f = \log p` differentiable in a relaxation of :math:`x`, the change of :math:`f`
    from flipping site :math:`i` (to the other value :math:`\bar x_i = a + b - x_i`) is estimated by
    :math:`\tilde d_i(x) = \partial_i f(x)\,(\bar x_i - x_i)`; a site is proposed with
    :math:`q(i \mid x) = \operatorname{softmax}(\tilde d(x)/2)_i` and the flip
    :math:`x \to x'` accepted with probability
    :math:`\min\{1,\ e^{f(x') - f(x)}\, q(i \mid x') / q(i \mid x)\}`, which leaves :math:`p`
    invariant exactly. It targets high-dimensional binary EBMs where most random single-site
    proposals would be wasted.

    :param logdensity_fn: :math:`\log p(x) = -E(x)`, differentiable in ``x`` (a float array of any
        shape with entries in ``values``).
    :param values: the two values, default ``(0, 1)``; ``(-1, 1)`` for spins.
    :param int num_flips: proposals per step (each costs one value-and-gradient evaluation).
    :return: ``SamplingAlgorithm(init, step)`` with ``GWGState`` and ``GWGInfo``.
    """
    vals = _values_array(values, None)
    kernel = _gwg_build_kernel(vals, num_flips)

    def init_fn(position, rng_key=None):
        position = _check_array_position("gibbs_with_gradients", position)
        if not jnp.issubdtype(position.dtype, jnp.floating):
            raise TypeError(
                "gibbs_with_gradients: the position must be a float array (the log density is "
                f"differentiated in x), got dtype {position.dtype}."
            )
        _check_in_values("gibbs_with_gradients", position, vals)
        return _gwg_init(position, logdensity_fn)

    def step_fn(rng_key, state):
        return kernel(rng_key, state, logdensity_fn)

    return SamplingAlgorithm(init_fn, step_fn)


class _GWGAPI:
    """``gibbs_with_gradients(logdensity_fn, values=(0, 1), num_flips=1)``."""

    init = staticmethod(_gwg_init)
    build_kernel = staticmethod(_gwg_build_kernel)
    __doc__ = _gibbs_with_gradients.__doc__

    def __call__(self, logdensity_fn, values=(0, 1), num_flips: int = 1) -> SamplingAlgorithm:
        return _gibbs_with_gradients(logdensity_fn, values, num_flips)


gibbs_with_gradients = _GWGAPI()
