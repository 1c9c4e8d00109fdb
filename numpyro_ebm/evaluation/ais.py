r"""Annealed importance sampling (Neal 2001): log partition functions of energy-based models.

Anneal ``num_chains`` independent chains from a normalized base :math:`p_0` to the target
:math:`e^{-E(x)}` through the intermediate unnormalized log densities

.. math::

    f_\beta(x) = (1 - \beta)\log p_0(x) - \beta E(x),\qquad 0 = \beta_0 < \beta_1 < \dots
    < \beta_K = 1 .

Each chain starts at :math:`x_0 \sim p_0`; at temperature :math:`k = 1, \dots, K` it adds
:math:`f_{\beta_k}(x_{k-1}) - f_{\beta_{k-1}}(x_{k-1})` to its log-weight and then moves
:math:`x_{k-1} \to x_k` with an MCMC transition that leaves :math:`f_{\beta_k}` invariant. Then
:math:`\mathbb E[w] = Z / Z_0` and

.. math::

    \widehat{\log Z} = \log Z_0 + \log \frac1N \sum_{n=1}^N w_n,\qquad
    \operatorname{se}(\widehat{\log Z}) \approx
        \frac{\operatorname{sd}(w)}{\sqrt N\,\operatorname{mean}(w)}

(the delta method on the log of the mean). By Jensen's inequality the estimate is a stochastic
*lower* bound of :math:`\log Z` in expectation; its bias and its error bar both shrink as the
number of temperatures grows. The error bar is only as good as the weights' sample variance: with
too few temperatures it can be too small (a heavy right tail that no chain has reached yet).

:func:`logz_ais` is the general estimator (any energy, any BlackJAX kernel built per temperature);
:func:`annealed_importance_sampling` is the engine it shares with the model-specific versions
(:meth:`numpyro_ebm.models.RBM.logz_ais`, :meth:`numpyro_ebm.models.DBM.logz_ais`), which anneal
along paths whose transitions are exact block Gibbs steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions import Distribution

from numpyro_ebm._validation import check_int, is_concrete, leading_size
from numpyro_ebm.sampling.chains import build_algorithm

__all__ = ["AISResult", "annealed_importance_sampling", "logz_ais", "temperature_schedule"]


class AISResult(NamedTuple):
    """What :func:`logz_ais` returns.

    :ivar log_Z: the estimate of :math:`\\log Z`, a scalar.
    :ivar stderr: its standard error (delta method on the log of the mean weight), a scalar.
    :ivar log_weights: ``(num_chains,)`` log importance weights :math:`\\log w_n` (``log_Z`` is
        ``log_Z_base + logsumexp(log_weights) - log(num_chains)``).
    :ivar ess: effective sample size of the weights, :math:`(\\sum w)^2 / \\sum w^2`.
    :ivar positions: the chains' final positions (approximate draws from the target), leading axis
        ``num_chains``.
    :ivar betas: the ``(K + 1,)`` inverse temperatures used, from 0 to 1.
    """

    log_Z: jax.Array
    stderr: jax.Array
    log_weights: jax.Array
    ess: jax.Array
    positions: Any
    betas: jax.Array


def temperature_schedule(num_temperatures: int, schedule: str = "sigmoid", sharpness=4.0):
    r"""``num_temperatures + 1`` inverse temperatures :math:`0 = \beta_0 < \dots < \beta_K = 1`.

    ``"linear"``: equally spaced. ``"sigmoid"`` (default; Grosse et al. 2013): :math:`\beta_k
    \propto \sigma(\delta (2k/K - 1))`, rescaled to :math:`[0, 1]`, which spends more temperatures
    near both ends, where the intermediate distributions change fastest.
    ``"geometric"``: :math:`\beta_k = 10^{-4 (1 - k/K)}` for :math:`k \ge 1` (dense near 0).

    :param int num_temperatures: ``K >= 1``, the number of annealing steps.
    :param str schedule: ``"sigmoid"``, ``"linear"`` or ``"geometric"``.
    :param float sharpness: :math:`\delta` of the sigmoid schedule.
    :return: a float32 array of shape ``(K + 1,)``.
    """
    k = check_int("num_temperatures", num_temperatures, 1)
    t = np.linspace(0.0, 1.0, k + 1)
    if schedule == "linear":
        betas = t
    elif schedule == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-sharpness * (2.0 * t - 1.0)))
        betas = (s - s[0]) / (s[-1] - s[0])
    elif schedule == "geometric":
        betas = np.concatenate([[0.0], np.logspace(-4, 0, k)]) if k > 1 else t
    else:
        raise ValueError(
            f"`schedule` must be 'sigmoid', 'linear' or 'geometric', got {schedule!r}."
        )
    return jnp.asarray(betas, jnp.float32)


def _check_betas(betas) -> jax.Array:
    betas = jnp.asarray(betas)
    if betas.ndim != 1 or betas.shape[0] < 2:
        raise ValueError(
            "`betas` must be a 1-D array of at least two inverse temperatures from 0 to 1, got "
            f"shape {betas.shape}."
        )
    if is_concrete(betas):
        b = np.asarray(betas, np.float64)
        if not (abs(b[0]) < 1e-7 and abs(b[-1] - 1.0) < 1e-6 and np.all(np.diff(b) >= 0)):
            raise ValueError(
                "`betas` must increase from 0 to 1 (first 0, last 1, non-decreasing); got "
                f"first {b[0]}, last {b[-1]}, min step {np.diff(b).min():.3g}."
            )
    return betas.astype(jnp.result_type(float))


def _summarize(log_Z_base, log_weights, positions, betas) -> AISResult:
    n = log_weights.shape[0]
    finite = jnp.where(jnp.isnan(log_weights), -jnp.inf, log_weights)
    shift = jnp.max(finite)
    w = jnp.exp(finite - shift)
    mean_w = jnp.mean(w)
    log_Z = log_Z_base + shift + jnp.log(mean_w)
    sd = jnp.std(w, ddof=1) if n > 1 else jnp.asarray(jnp.inf, w.dtype)
    stderr = sd / (jnp.sqrt(n) * mean_w)
    ess = jnp.sum(w) ** 2 / jnp.sum(w**2)
    return AISResult(log_Z, stderr, log_weights, ess, positions, betas)


def annealed_importance_sampling(
    rng_key,
    init_positions,
    log_Z_base,
    log_density: Callable,
    transition: Callable,
    betas,
) -> AISResult:
    r"""The AIS engine: anneal given chains along a given path with given transitions.

    :param rng_key: a JAX PRNG key.
    :param init_positions: draws from the normalized base :math:`p_0`, a pytree with leading
        axis ``num_chains``.
    :param log_Z_base: :math:`\log Z_0`, the log normalizer of :math:`\exp f_0` (0 when
        :math:`f_0 = \log p_0`).
    :param log_density: ``(beta, x) -> f_beta(x)`` for one chain's ``x``: the unnormalized log
        density of the intermediate distribution; ``f_1`` must be the target's ``-E``.
    :param transition: ``(rng_key, beta, x) -> x``, one chain's MCMC move leaving
        :math:`\exp f_\beta` invariant.
    :param betas: ``(K + 1,)`` inverse temperatures increasing from 0 to 1.
    :return: an :class:`AISResult`.

    The loop over temperatures is a ``lax.scan``; chains are ``vmap``-ed; the whole run is
    ``jit``-compatible.
    """
    betas = _check_betas(betas)
    num_chains = leading_size("init_positions", init_positions)

    def one_temperature(carry, inputs):
        x, log_w = carry
        beta_prev, beta, key = inputs
        log_w = log_w + jax.vmap(lambda xi: log_density(beta, xi) - log_density(beta_prev, xi))(x)
        keys = jax.random.split(key, num_chains)
        x = jax.vmap(lambda k, xi: transition(k, beta, xi))(keys, x)
        return (x, log_w), None

    keys = jax.random.split(rng_key, betas.shape[0] - 1)
    log_w0 = jnp.zeros((num_chains,), betas.dtype)
    (x, log_w), _ = jax.lax.scan(
        one_temperature, (init_positions, log_w0), (betas[:-1], betas[1:], keys)
    )
    return _summarize(jnp.asarray(log_Z_base, log_w.dtype), log_w, x, betas)


def logz_ais(
    rng_key,
    energy_fn: Callable,
    base: Distribution,
    kernel: Callable,
    num_chains: int = 256,
    num_temperatures: int = 1000,
    *,
    betas=None,
    num_steps_per_temperature: int = 1,
    schedule: str = "sigmoid",
) -> AISResult:
    r"""Estimate :math:`\log Z = \log \int e^{-E(x)} dx` (or a sum, for discrete ``x``) by AIS.

    Anneals along :math:`f_\beta(x) = (1-\beta)\log p_0(x) - \beta E(x)` (see the module
    docstring) with ``num_steps_per_temperature`` transitions of ``kernel`` at each
    :math:`\beta`, the kernel rebuilt for :math:`f_\beta` at each temperature.

    :param rng_key: a JAX PRNG key.
    :param energy_fn: ``E``, mapping one position ``x`` (shape ``event_shape``) to a scalar.
    :param base: the normalized base :math:`p_0`, a NumPyro distribution with ``sample`` and
        ``log_prob`` over the same events (e.g. ``dist.Normal(0, 3).expand([2]).to_event(1)``);
        the closer to the target, the fewer temperatures are needed.
    :param kernel: a factory ``logdensity_fn -> blackjax.SamplingAlgorithm`` (e.g.
        ``functools.partial(blackjax.mala, step_size=0.1)``, ``functools.partial(
        numpyro_ebm.gibbs, values=(0, 1))`` for binary variables), called once per temperature
        with :math:`f_\beta`.
    :param int num_chains: number of independent annealing runs :math:`N`.
    :param int num_temperatures: ``K``, used with ``schedule`` when ``betas`` is not given.
    :param betas: optional ``(K + 1,)`` schedule increasing from 0 to 1 (overrides
        ``num_temperatures`` and ``schedule``).
    :param int num_steps_per_temperature: MCMC transitions at each temperature.
    :param str schedule: see :func:`temperature_schedule`.
    :return: :class:`AISResult` ``(log_Z, stderr, log_weights, ess, positions, betas)``.

    **Example**

    .. code-block:: python

        energy = lambda x: 0.5 * jnp.sum(x**2) / 0.5**2        # log Z = log(2 pi 0.25)
        base = dist.Normal(0.0, 2.0).expand([2]).to_event(1)
        res = numpyro_ebm.logz_ais(jax.random.key(0), energy, base,
                                   functools.partial(blackjax.mala, step_size=0.05),
                                   num_chains=512, num_temperatures=200)
        res.log_Z, res.stderr
    """
    if not callable(energy_fn):
        raise TypeError(f"`energy_fn` must be a callable x -> E(x), got {energy_fn!r}.")
    if not isinstance(base, Distribution):
        raise TypeError(
            "`base` must be a normalized NumPyro distribution (with sample and log_prob), e.g. "
            f"`dist.Normal(0, 3).expand([2]).to_event(1)`; got {base!r}."
        )
    num_chains = check_int("num_chains", num_chains, 1)
    num_steps = check_int("num_steps_per_temperature", num_steps_per_temperature, 1)
    if betas is None:
        betas = temperature_schedule(num_temperatures, schedule)
    betas = _check_betas(betas)
    build_algorithm(kernel, base.log_prob)  # fail early on a kernel that is not a factory

    def log_density(beta, x):
        return (1.0 - beta) * base.log_prob(x) - beta * energy_fn(x)

    def transition(key, beta, x):
        algorithm = kernel(lambda y: log_density(beta, y))
        init_key, run_key = jax.random.split(key)
        state = algorithm.init(x, init_key)

        def step(state, k):
            return algorithm.step(k, state)[0], None

        state, _ = jax.lax.scan(step, state, jax.random.split(run_key, num_steps))
        return state.position

    base_key, run_key = jax.random.split(rng_key)
    x0 = base.sample(base_key, (num_chains,))
    energy_shape = jax.eval_shape(energy_fn, jax.tree.map(lambda a: a[0], x0)).shape
    if energy_shape != ():
        raise ValueError(
            f"`energy_fn` must map one position of shape {tuple(base.event_shape)} to a scalar "
            f"energy; it returned shape {energy_shape}. (`base` fixes the event shape.)"
        )
    return _run_logz_ais(run_key, x0, betas, log_density, transition)


def _run_logz_ais(rng_key, x0, betas, log_density, transition):
    return jax.jit(
        lambda key, x, b: annealed_importance_sampling(key, x, 0.0, log_density, transition, b)
    )(rng_key, x0, betas)
