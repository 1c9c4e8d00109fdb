r"""A deep Boltzmann machine with two hidden layers (Salakhutdinov & Hinton 2009).

.. math::

    E(v, h^1, h^2) = -a^\top v - b_1^\top h^1 - b_2^\top h^2 - v^\top W_1 h^1
                     - {h^1}^\top W_2 h^2,

binary units, no links inside a layer. Given :math:`h^1`, the layers :math:`v` and :math:`h^2` are
independent, and given :math:`(v, h^2)` the units of :math:`h^1` are:

.. math::

    p(h^1_j = 1 \mid v, h^2) = \sigma(b_{1j} + (v^\top W_1)_j + (W_2 h^2)_j),\quad
    p(v_i = 1 \mid h^1) = \sigma(a_i + (W_1 h^1)_i),\quad
    p(h^2_k = 1 \mid h^1) = \sigma(b_{2k} + ({h^1}^\top W_2)_k),

so one Gibbs sweep redraws the odd layer, then both even layers in parallel.

**Learning.** The data phase uses the mean-field posterior :math:`q(h^1, h^2 \mid v) =
\prod \mu^1_j{}^{h^1_j}(1-\mu^1_j)^{1-h^1_j} \prod \dots` (fixed-point iterations of
:meth:`DBM.mean_field`); the model phase uses persistent Gibbs chains (PCD). The surrogate loss

.. math::

    L(\theta) = \operatorname{mean}_{v \in \text{batch}} E_\theta(v, \operatorname{sg}(\mu^1),
    \operatorname{sg}(\mu^2)) - \operatorname{mean}_{\text{chains}}
    E_\theta(\operatorname{sg}(v', h^{1\prime}, h^{2\prime}))

has the gradient of the variational lower bound minus the model expectation (its gradient in
:math:`W_2` is :math:`-\langle \mu^1 {\mu^2}^\top\rangle_{\rm data} + \langle h^1 {h^2}^\top
\rangle_{\rm model}`, etc.).

**Partition function.** Summing out :math:`v` and :math:`h^2` given :math:`h^1` leaves

.. math::

    \log Z = \operatorname{logsumexp}_{h^1} \Big[b_1^\top h^1 + \sum_i
        \operatorname{softplus}(a_i + (W_1 h^1)_i) + \sum_k
        \operatorname{softplus}(b_{2k} + ({h^1}^\top W_2)_k)\Big],

exact for :math:`H_1 \le 24` (:meth:`DBM.log_partition`); otherwise AIS (:meth:`DBM.logz_ais`)
anneals :math:`e^{-\beta E}` from :math:`\beta = 0` (uniform) to 1, on the same marginal over
:math:`h^1`, with Gibbs sweeps at each :math:`\beta`.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from numpyro_ebm._validation import check_int, check_positive
from numpyro_ebm.evaluation.ais import (
    AISResult,
    annealed_importance_sampling,
    check_betas,
    temperature_schedule,
)
from numpyro_ebm.evaluation.partition import logz_exact
from numpyro_ebm.models.rbm import MAX_ENUMERATION_UNITS, RBM, _check_params
from numpyro_ebm.sampling.annealing import transition_path

__all__ = ["DBM", "DBMState", "DBMFitResult"]


class DBMState(NamedTuple):
    """A DBM configuration (or a batch of them): ``v`` ``(..., V)``, ``h1`` ``(..., H1)``,
    ``h2`` ``(..., H2)``, float 0/1."""

    v: jax.Array
    h1: jax.Array
    h2: jax.Array


class DBMFitResult(NamedTuple):
    """What :meth:`DBM.fit` returns: the parameters, the persistent chains and the loss trace."""

    params: dict
    chains: DBMState
    losses: jax.Array


class DBM:
    r"""A two-hidden-layer deep Boltzmann machine (see the module docstring).

    Parameters: a dict ``{"W1": (V, H1), "W2": (H1, H2), "a": (V,), "b1": (H1,), "b2": (H2,)}``.

    :param int num_visible: ``V``.
    :param int num_hidden1: ``H1``.
    :param int num_hidden2: ``H2``.
    :param float init_scale: standard deviation of the initial weights.

    **Example**

    .. code-block:: python

        dbm = DBM(64, 16, 8)
        fit = dbm.fit(jax.random.key(0), data, optax.adam(1e-2), num_steps=3000)
        dbm.log_likelihood(fit.params, test).mean()        # exact: H1 <= 24
    """

    def __init__(self, num_visible: int, num_hidden1: int, num_hidden2: int, *,
                 init_scale: float = 0.01):
        self.num_visible = check_int("num_visible", num_visible, 1)
        self.num_hidden1 = check_int("num_hidden1", num_hidden1, 1)
        self.num_hidden2 = check_int("num_hidden2", num_hidden2, 1)
        check_positive("init_scale", init_scale)
        self.init_scale = float(init_scale)

    def __repr__(self):
        return f"DBM({self.num_visible}, {self.num_hidden1}, {self.num_hidden2})"

    @property
    def param_shapes(self) -> dict:
        V, H1, H2 = self.num_visible, self.num_hidden1, self.num_hidden2
        return {"W1": (V, H1), "W2": (H1, H2), "a": (V,), "b1": (H1,), "b2": (H2,)}

    def _check(self, params):
        _check_params(repr(self), params, self.param_shapes)

    def init_params(self, rng_key, data=None) -> dict:
        """Small random weights, zero hidden biases, visible biases from the data's means."""
        k1, k2 = jax.random.split(rng_key)
        V, H1, H2 = self.num_visible, self.num_hidden1, self.num_hidden2
        return {
            "W1": self.init_scale * jax.random.normal(k1, (V, H1)),
            "W2": self.init_scale * jax.random.normal(k2, (H1, H2)),
            "a": RBM._data_visible_bias(data, V),
            "b1": jnp.zeros((H1,)),
            "b2": jnp.zeros((H2,)),
        }

    # -- energies ---------------------------------------------------------------------------

    def energy(self, params, v, h1, h2):
        """:math:`E(v, h^1, h^2)`, any common batch shape."""
        p = params
        return (-(v @ p["a"]) - (h1 @ p["b1"]) - (h2 @ p["b2"])
                - jnp.einsum("...i,ij,...j->...", v, p["W1"], h1)
                - jnp.einsum("...j,jk,...k->...", h1, p["W2"], h2))

    def _log_marginal_h1(self, params, h1):
        """:math:`\\log \\sum_{v, h^2} e^{-E}` as a function of ``h1`` ``(..., H1)``."""
        p = params
        return (h1 @ p["b1"] + jnp.sum(jax.nn.softplus(h1 @ p["W1"].T + p["a"]), -1)
                + jnp.sum(jax.nn.softplus(h1 @ p["W2"] + p["b2"]), -1))

    def log_partition(self, params, batch_size: int = 16_384) -> jax.Array:
        """Exact :math:`\\log Z` by enumerating :math:`h^1` (``H1 <= 24``), other layers summed
        analytically; :func:`numpyro_ebm.evaluation.partition.logz_exact` does the enumeration."""
        self._check(params)
        if self.num_hidden1 > MAX_ENUMERATION_UNITS:
            raise ValueError(
                f"{self!r}.log_partition enumerates the first hidden layer: at most "
                f"{MAX_ENUMERATION_UNITS} units, got {self.num_hidden1}. Use `logz_ais`."
            )
        return logz_exact(lambda h1: -self._log_marginal_h1(params, h1), self.num_hidden1,
                          (0, 1), batch_size)

    def log_unnormalized(self, params, v, batch_size: int = 4096):
        """:math:`\\log \\sum_{h^1, h^2} e^{-E(v, h^1, h^2)}` for each ``v`` ``(n, V)``: exact, by
        enumerating :math:`h^1` (``H1 <= 24``; cost ``n * 2**H1``)."""
        self._check(params)
        p = params
        v = jnp.asarray(v, jnp.float32)

        def one(vi):
            def neg_energy(h1):
                return (vi @ p["a"] + h1 @ p["b1"] + (vi @ p["W1"]) @ h1.T
                        + jnp.sum(jax.nn.softplus(h1 @ p["W2"] + p["b2"]), -1))

            return -logz_exact(lambda h1: -neg_energy(h1), self.num_hidden1, (0, 1), batch_size)

        return -jax.lax.map(one, v)

    def log_likelihood(self, params, v, log_Z=None):
        """Exact :math:`\\log p(v)` per example (``log_Z`` exact unless given, e.g. from AIS)."""
        if log_Z is None:
            log_Z = self.log_partition(params)
        return self.log_unnormalized(params, v) - log_Z

    # -- inference and sampling --------------------------------------------------------------

    def mean_field(self, params, v, num_iters: int = 10):
        r"""Mean-field posterior means :math:`(\mu^1, \mu^2)` of the hidden layers given ``v``.

        Fixed-point iterations :math:`\mu^1 \leftarrow \sigma(b_1 + W_1^\top v + W_2 \mu^2)`,
        :math:`\mu^2 \leftarrow \sigma(b_2 + W_2^\top \mu^1)`, started bottom-up with
        :math:`\mu^2 = \sigma(b_2 + W_2^\top \sigma(b_1 + W_1^\top v))`.
        """
        p = params
        v = jnp.asarray(v, jnp.float32)
        bottom_up = v @ p["W1"] + p["b1"]
        mu1 = jax.nn.sigmoid(bottom_up)
        mu2 = jax.nn.sigmoid(mu1 @ p["W2"] + p["b2"])

        def body(carry, _):
            mu1, mu2 = carry
            mu1 = jax.nn.sigmoid(bottom_up + mu2 @ p["W2"].T)
            mu2 = jax.nn.sigmoid(mu1 @ p["W2"] + p["b2"])
            return (mu1, mu2), None

        (mu1, mu2), _ = jax.lax.scan(body, (mu1, mu2), None, length=num_iters)
        return mu1, mu2

    def mean_field_bound(self, params, v, num_iters: int = 10):
        """The mean-field lower bound of :math:`\\log \\sum_h e^{-E(v, h)}`:
        :math:`-E(v, \\mu) + \\mathcal H(\\mu)` per example."""
        mu1, mu2 = self.mean_field(params, v, num_iters)

        def entropy(m):
            m = jnp.clip(m, 1e-7, 1 - 1e-7)
            return -jnp.sum(m * jnp.log(m) + (1 - m) * jnp.log1p(-m), -1)

        return -self.energy(params, jnp.asarray(v, jnp.float32), mu1, mu2) + entropy(mu1) + entropy(
            mu2)

    def gibbs_sweep(self, rng_key, params, state: DBMState, beta=1.0) -> DBMState:
        """One sweep at inverse temperature ``beta``: :math:`h^1 \\mid (v, h^2)`, then
        :math:`v \\mid h^1` and :math:`h^2 \\mid h^1` in parallel. Any batch shape."""
        p = params
        k1, kv, k2 = jax.random.split(rng_key, 3)
        v, _, h2 = state
        ph1 = jax.nn.sigmoid(beta * (v @ p["W1"] + h2 @ p["W2"].T + p["b1"]))
        h1 = jax.random.bernoulli(k1, ph1).astype(ph1.dtype)
        v = jax.random.bernoulli(kv, jax.nn.sigmoid(beta * (h1 @ p["W1"].T + p["a"])))
        h2 = jax.random.bernoulli(k2, jax.nn.sigmoid(beta * (h1 @ p["W2"] + p["b2"])))
        return DBMState(v.astype(ph1.dtype), h1, h2.astype(ph1.dtype))

    def init_state(self, rng_key, num_chains: int) -> DBMState:
        """``num_chains`` uniform random configurations."""
        num_chains = check_int("num_chains", num_chains, 1)
        kv, k1, k2 = jax.random.split(rng_key, 3)
        draw = lambda k, n: jax.random.bernoulli(k, 0.5, (num_chains, n)).astype(jnp.float32)
        return DBMState(draw(kv, self.num_visible), draw(k1, self.num_hidden1),
                        draw(k2, self.num_hidden2))

    def sample(self, rng_key, params, num_chains: int, num_sweeps: int,
               init: DBMState | None = None) -> DBMState:
        """Run ``num_chains`` Gibbs chains for ``num_sweeps`` sweeps; returns the final states."""
        self._check(params)
        num_sweeps = check_int("num_sweeps", num_sweeps, 1)
        init_key, run_key = jax.random.split(rng_key)
        state = self.init_state(init_key, num_chains) if init is None else init
        return _run_gibbs(self, run_key, params, state, num_sweeps)

    # -- learning ----------------------------------------------------------------------------

    def loss(self, params, v, negatives: DBMState, num_mean_field: int = 10):
        """The surrogate loss of the module docstring (mean-field data phase, given negatives)."""
        mu1, mu2 = jax.lax.stop_gradient(self.mean_field(params, v, num_mean_field))
        neg = jax.lax.stop_gradient(negatives)
        v = jnp.asarray(v, jnp.float32)
        return jnp.mean(self.energy(params, v, mu1, mu2)) - jnp.mean(
            self.energy(params, neg.v, neg.h1, neg.h2))

    def fit(self, rng_key, data, optimizer: optax.GradientTransformation | None = None, *,
            num_steps: int = 2000, batch_size: int = 100, num_chains: int = 100,
            num_gibbs: int = 1, num_mean_field: int = 10, params=None) -> DBMFitResult:
        """Train by mean-field + PCD: one ``lax.scan`` over ``num_steps`` updates of
        ``optimizer`` (default ``optax.adam(1e-2)``), ``num_chains`` persistent chains advanced
        by ``num_gibbs`` sweeps per update, minibatches of ``batch_size`` rows of ``data``."""
        data = jnp.asarray(data, jnp.float32)
        if data.ndim != 2 or data.shape[1] != self.num_visible:
            raise ValueError(f"{self!r}.fit: `data` must have shape (N, {self.num_visible}), got "
                             f"{data.shape}.")
        optimizer = optax.adam(1e-2) if optimizer is None else optimizer
        init_key, chain_key, run_key = jax.random.split(rng_key, 3)
        params = self.init_params(init_key, data) if params is None else params
        self._check(params)
        chains = self.init_state(chain_key, num_chains)
        return _fit(self, optimizer, run_key, data, params, chains,
                    check_int("num_steps", num_steps, 1), check_int("batch_size", batch_size, 1),
                    check_int("num_gibbs", num_gibbs, 1),
                    check_int("num_mean_field", num_mean_field, 1))

    # -- AIS ---------------------------------------------------------------------------------

    def logz_ais(self, rng_key, params, num_temperatures: int = 1000, num_chains: int = 100, *,
                 betas=None, num_sweeps: int = 1, schedule: str = "linear") -> AISResult:
        r""":math:`\log Z` by AIS along :math:`e^{-\beta E}`, :math:`\beta: 0 \to 1`.

        The base (:math:`\beta = 0`) is uniform, :math:`\log Z_0 = (V + H_1 + H_2)\log 2`; the
        importance weights use the marginal of :math:`h^1` at each :math:`\beta` (the other two
        layers summed out analytically), the transitions are Gibbs sweeps at :math:`\beta` that
        redraw :math:`v, h^2 \mid h^1` and then :math:`h^1 \mid v, h^2` (a kernel on :math:`h^1`
        that leaves its marginal at :math:`\beta` invariant).
        ``positions`` of the result are the final ``DBMState``.
        """
        self._check(params)
        if betas is None:
            betas = temperature_schedule(num_temperatures, schedule)
        betas = check_betas(betas)
        return _dbm_ais(self, rng_key, params, betas, check_int("num_chains", num_chains, 1),
                        check_int("num_sweeps", num_sweeps, 1))


@partial(jax.jit, static_argnums=(0, 4))
def _run_gibbs(dbm: DBM, rng_key, params, state, num_sweeps):
    def body(s, k):
        return dbm.gibbs_sweep(k, params, s), None

    return jax.lax.scan(body, state, jax.random.split(rng_key, num_sweeps))[0]


@partial(jax.jit, static_argnums=(0, 1, 6, 7, 8, 9))
def _fit(dbm: DBM, optimizer, rng_key, data, params, chains, num_steps, batch_size, num_gibbs,
         num_mean_field):
    def step(carry, key):
        params, opt_state, chains = carry
        batch_key, chain_key = jax.random.split(key)
        v = data[jax.random.randint(batch_key, (batch_size,), 0, data.shape[0])]
        frozen = jax.lax.stop_gradient(params)
        chains = jax.lax.scan(lambda s, k: (dbm.gibbs_sweep(k, frozen, s), None), chains,
                              jax.random.split(chain_key, num_gibbs))[0]
        loss, grads = jax.value_and_grad(dbm.loss)(params, v, chains, num_mean_field)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, chains), loss

    carry = (params, optimizer.init(params), chains)
    (params, _, chains), losses = jax.lax.scan(step, carry, jax.random.split(rng_key, num_steps))
    return DBMFitResult(params, chains, losses)


@partial(jax.jit, static_argnums=(0, 4, 5))
def _dbm_ais(dbm: DBM, rng_key, params, betas, num_chains, num_sweeps):
    p = params

    def log_density(beta, state):
        h1 = state.h1
        return (beta * (h1 @ p["b1"]) + jnp.sum(jax.nn.softplus(beta * (h1 @ p["W1"].T + p["a"])))
                + jnp.sum(jax.nn.softplus(beta * (h1 @ p["W2"] + p["b2"]))))

    def transition(key, beta, state):
        def one(s, k):
            kv, k2, k1 = jax.random.split(k, 3)
            v = jax.random.bernoulli(kv, jax.nn.sigmoid(beta * (s.h1 @ p["W1"].T + p["a"])))
            h2 = jax.random.bernoulli(k2, jax.nn.sigmoid(beta * (s.h1 @ p["W2"] + p["b2"])))
            v, h2 = v.astype(s.h1.dtype), h2.astype(s.h1.dtype)
            ph1 = jax.nn.sigmoid(beta * (v @ p["W1"] + h2 @ p["W2"].T + p["b1"]))
            h1 = jax.random.bernoulli(k1, ph1).astype(s.h1.dtype)
            return DBMState(v, h1, h2), None

        return jax.lax.scan(one, state, jax.random.split(key, num_sweeps))[0]

    init_key, run_key = jax.random.split(rng_key)
    state = dbm.init_state(init_key, num_chains)
    log_Z0 = (dbm.num_visible + dbm.num_hidden1 + dbm.num_hidden2) * math.log(2.0)
    path = transition_path(log_density, transition, None, log_Z0)
    return annealed_importance_sampling(run_key, path, betas, num_chains, init_positions=state)
