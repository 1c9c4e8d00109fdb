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

**The site.** The model's variable is the joint binary state :math:`x = (v, h^1, h^2)`, one vector
of length :math:`V + H_1 + H_2` (:meth:`DBM.split` views it as a :class:`DBMState`), with energy
:math:`E(x)`. Its sampler is the Gibbs sweep above; its annealing path is :math:`f_\beta = -\beta E`
from the uniform distribution (:math:`\log Z_0 = (V + H_1 + H_2)\log 2`), Gibbs sweeps at
:math:`\beta` exact at every :math:`\beta`.

**Learning** (through ``SVI``). :meth:`DBM.model` computes the mean-field posterior means
:math:`(\mu^1, \mu^2)` of the minibatch (:meth:`DBM.mean_field`, under ``stop_gradient``) and
observes :math:`x = (v, \mu^1, \mu^2)`. :math:`E` is linear in each layer and the mean-field
posterior factorizes, so :math:`E(v, \mu^1, \mu^2) = \mathbb E_q[E(v, h^1, h^2)]`, the data term
of the variational bound. ``PersistentContrastiveDivergence(None, ...)`` (``kernel=None``: the
site's own Gibbs sampler on persistent chains over :math:`x`) then minimizes

.. math::

    L(\theta) = \operatorname{mean}_{v \in \text{batch}} E_\theta(v, \operatorname{sg}(\mu^1),
    \operatorname{sg}(\mu^2)) - \operatorname{mean}_{\text{chains}}
    E_\theta(\operatorname{sg}(v', h^{1\prime}, h^{2\prime})),

the mean-field + PCD learning rule (its gradient in :math:`W_2` is
:math:`-\langle \mu^1 {\mu^2}^\top\rangle_{\rm data} + \langle h^1 {h^2}^\top \rangle_{\rm model}`,
etc.).

**Partition function.** Summing out :math:`v` and :math:`h^2` given :math:`h^1` leaves

.. math::

    \log Z = \operatorname{logsumexp}_{h^1} \Big[b_1^\top h^1 + \sum_i
        \operatorname{softplus}(a_i + (W_1 h^1)_i) + \sum_k
        \operatorname{softplus}(b_{2k} + ({h^1}^\top W_2)_k)\Big],

exact for :math:`H_1 \le 24` (:meth:`DBM.log_partition`); otherwise AIS (:meth:`DBM.logz_ais`), by
default on this marginal of :math:`h^1` (``rao_blackwellize=True``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpyro
from numpyro.distributions import constraints

from numpyro_ebm._validation import check_float, check_in_set, check_int
from numpyro_ebm.evaluation.ais import AISResult, logz_ais
from numpyro_ebm.models.base import EnergyModel
from numpyro_ebm.models.rbm import MAX_ENUMERATION_UNITS, data_visible_bias, logsumexp_binary_layer
from numpyro_ebm.sampling.annealing import AnnealingPath, transition_path

__all__ = ["DBM", "DBMState"]


class DBMState(NamedTuple):
    """A DBM configuration (or a batch of them): ``v`` ``(..., V)``, ``h1`` ``(..., H1)``,
    ``h2`` ``(..., H2)``, float 0/1 (:meth:`DBM.split` of a joint vector)."""

    v: jax.Array
    h1: jax.Array
    h2: jax.Array


class DBM(EnergyModel):
    r"""A two-hidden-layer deep Boltzmann machine (see the module docstring).

    Parameters: a dict ``{"W1": (V, H1), "W2": (H1, H2), "a": (V,), "b1": (H1,), "b2": (H2,)}``.
    The site's variable is the joint state ``x`` of length ``V + H1 + H2``.

    :param int num_visible: ``V``.
    :param int num_hidden1: ``H1``.
    :param int num_hidden2: ``H2``.
    :param float init_scale: standard deviation of the initial weights.
    :param str name: prefix of the parameter sites; the observed site is ``site`` (default
        ``f"{name}_x"``).

    **Example**

    .. code-block:: python

        dbm = DBM(64, 16, 8)
        pcd = PersistentContrastiveDivergence(None, num_steps=5, num_chains=100,
                                              init_dist=bernoulli_base(64 + 16 + 8))
        svi = SVI(dbm.model, pcd.guide, optax.adam(1e-2), loss=pcd)
        result = svi.run(jax.random.key(0), 3000, data, subsample_size=50)
        params = dbm.get_params(result.params)
        dbm.log_likelihood(params, test).mean()        # exact: H1 <= 24
    """

    support = constraints.boolean

    def __init__(self, num_visible: int, num_hidden1: int, num_hidden2: int, *,
                 init_scale: float = 0.01, name: str = "dbm", site: str | None = None):
        self.num_visible = check_int("num_visible", num_visible, 1)
        self.num_hidden1 = check_int("num_hidden1", num_hidden1, 1)
        self.num_hidden2 = check_int("num_hidden2", num_hidden2, 1)
        self.init_scale = check_float("init_scale", init_scale, positive=True)
        self.set_names(name, site, "x")

    def __repr__(self):
        return f"DBM({self.num_visible}, {self.num_hidden1}, {self.num_hidden2})"

    @property
    def num_units(self) -> int:
        """``V + H1 + H2``, the length of the joint state."""
        return self.num_visible + self.num_hidden1 + self.num_hidden2

    @property
    def event_shape(self) -> tuple:
        return (self.num_units,)

    @property
    def param_shapes(self) -> dict:
        V, H1, H2 = self.num_visible, self.num_hidden1, self.num_hidden2
        return {"W1": (V, H1), "W2": (H1, H2), "a": (V,), "b1": (H1,), "b2": (H2,)}

    def init_params(self, rng_key=None, data=None) -> dict:
        """Small random weights (``rng_key`` defaults to ``jax.random.key(0)``), zero hidden
        biases, visible biases the logit of the data's means (0 without data)."""
        rng_key = jax.random.key(0) if rng_key is None else rng_key
        k1, k2 = jax.random.split(rng_key)
        V, H1, H2 = self.num_visible, self.num_hidden1, self.num_hidden2
        return {
            "W1": self.init_scale * jax.random.normal(k1, (V, H1)),
            "W2": self.init_scale * jax.random.normal(k2, (H1, H2)),
            "a": data_visible_bias(data, V),
            "b1": jnp.zeros((H1,)),
            "b2": jnp.zeros((H2,)),
        }

    # -- the joint state ------------------------------------------------------------------------

    def split(self, x) -> DBMState:
        """View joint states ``(..., V + H1 + H2)`` as a :class:`DBMState`."""
        x = jnp.asarray(x)
        if x.shape[-1:] != (self.num_units,):
            raise ValueError(
                f"{self!r}.split: `x` must end in V + H1 + H2 = {self.num_units} units, got shape "
                f"{x.shape}."
            )
        V, H1 = self.num_visible, self.num_hidden1
        return DBMState(x[..., :V], x[..., V:V + H1], x[..., V + H1:])

    def join(self, v, h1, h2):
        """The joint state ``(..., V + H1 + H2)`` of the layers (broadcast batch shapes)."""
        v, h1, h2 = (jnp.asarray(u, jnp.result_type(float)) for u in (v, h1, h2))
        batch = jnp.broadcast_shapes(v.shape[:-1], h1.shape[:-1], h2.shape[:-1])
        return jnp.concatenate([jnp.broadcast_to(u, batch + u.shape[-1:]) for u in (v, h1, h2)],
                               -1)

    # -- energies -------------------------------------------------------------------------------

    def joint_energy(self, params, v, h1, h2):
        """:math:`E(v, h^1, h^2)`, any common batch shape."""
        p = params
        return (-(v @ p["a"]) - (h1 @ p["b1"]) - (h2 @ p["b2"])
                - jnp.einsum("...i,ij,...j->...", v, p["W1"], h1)
                - jnp.einsum("...j,jk,...k->...", h1, p["W2"], h2))

    def energy(self, params, x):
        """:math:`E(x)` of joint states ``(..., V + H1 + H2)`` -> ``(...)``."""
        return self.joint_energy(params, *self.split(jnp.asarray(x, params["a"].dtype)))

    def log_marginal_h1(self, params, h1, beta=1.0):
        """:math:`\\log \\sum_{v, h^2} e^{-\\beta E}` as a function of ``h1`` ``(..., H1)``."""
        p = params
        return (beta * (h1 @ p["b1"]) + jnp.sum(jax.nn.softplus(beta * (h1 @ p["W1"].T + p["a"])), -1)
                + jnp.sum(jax.nn.softplus(beta * (h1 @ p["W2"] + p["b2"])), -1))

    def log_partition(self, params, chunk_size: int = 16_384) -> jax.Array:
        """Exact :math:`\\log Z` by enumerating :math:`h^1` (``H1 <= 24``), the other layers summed
        analytically."""
        self.check_params(params)
        return logsumexp_binary_layer(lambda h1: self.log_marginal_h1(params, h1),
                                      self.num_hidden1, chunk_size, repr(self))

    def log_unnormalized(self, params, v, chunk_size: int = 4096):
        """:math:`\\log \\sum_{h^1, h^2} e^{-E(v, h^1, h^2)}` for each ``v`` ``(n, V)``: exact, by
        enumerating :math:`h^1` (``H1 <= 24``; cost ``n * 2**H1``)."""
        self.check_params(params)
        if self.num_hidden1 > MAX_ENUMERATION_UNITS:
            raise ValueError(
                f"{self!r}.log_unnormalized enumerates the first hidden layer: at most "
                f"{MAX_ENUMERATION_UNITS} units, got {self.num_hidden1}."
            )
        p = params
        v = jnp.asarray(v, p["a"].dtype)

        def one(vi):
            def log_f(h1):
                return (vi @ p["a"] + h1 @ p["b1"] + (vi @ p["W1"]) @ h1.T
                        + jnp.sum(jax.nn.softplus(h1 @ p["W2"] + p["b2"]), -1))

            return logsumexp_binary_layer(log_f, self.num_hidden1, chunk_size, repr(self))

        return jax.lax.map(one, v)

    def log_likelihood(self, params, v, log_Z=None):
        """Exact :math:`\\log p(v)` per example (``log_Z`` exact unless given, e.g. from AIS)."""
        if log_Z is None:
            log_Z = self.log_partition(params)
        return self.log_unnormalized(params, v) - log_Z

    # -- inference ------------------------------------------------------------------------------

    def mean_field(self, params, v, num_iters: int = 10):
        r"""Mean-field posterior means :math:`(\mu^1, \mu^2)` of the hidden layers given ``v``.

        Fixed-point iterations :math:`\mu^1 \leftarrow \sigma(b_1 + W_1^\top v + W_2 \mu^2)`,
        :math:`\mu^2 \leftarrow \sigma(b_2 + W_2^\top \mu^1)`, started bottom-up with
        :math:`\mu^2 = \sigma(b_2 + W_2^\top \sigma(b_1 + W_1^\top v))`.
        """
        p = params
        v = jnp.asarray(v, p["a"].dtype)
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

        v = jnp.asarray(v, params["a"].dtype)
        return -self.joint_energy(params, v, mu1, mu2) + entropy(mu1) + entropy(mu2)

    # -- NumPyro --------------------------------------------------------------------------------

    def model(self, data=None, *, subsample_size: int | None = None, num_mean_field: int = 10):
        """A NumPyro model: the parameters as ``numpyro.param`` sites ``f"{name}_W1"`` (...), and
        for each row ``v`` of ``data`` ``(N, V)`` (subsampled to ``subsample_size`` rows) the joint
        vector ``(v, mu1, mu2)`` of its mean-field posterior means (``num_mean_field``
        iterations, no gradient) observed at the site ``self.site`` with energy :math:`E`.

        Train with ``SVI(dbm.model, pcd.guide, optim, loss=pcd)``,
        ``pcd = PersistentContrastiveDivergence(None, ...)`` (module docstring).
        """
        num_mean_field = check_int("num_mean_field", num_mean_field, 1)
        if data is not None:
            shape = jnp.shape(data)
            if len(shape) != 2 or shape[1] != self.num_visible:
                raise ValueError(
                    f"{self!r}.model: `data` must have shape (N, {self.num_visible}), got {shape}."
                )
            check_in_set("data", data, (0, 1), f"{self!r}.model")
        V, H1, H2, scale = self.num_visible, self.num_hidden1, self.num_hidden2, self.init_scale
        params = {
            "W1": numpyro.param(f"{self.name}_W1",
                                lambda key: scale * jax.random.normal(key, (V, H1))),
            "W2": numpyro.param(f"{self.name}_W2",
                                lambda key: scale * jax.random.normal(key, (H1, H2))),
            "a": numpyro.param(f"{self.name}_a", data_visible_bias(data, V)),
            "b1": numpyro.param(f"{self.name}_b1", jnp.zeros((H1,))),
            "b2": numpyro.param(f"{self.name}_b2", jnp.zeros((H2,))),
        }
        n = 1 if data is None else jnp.shape(data)[0]
        with numpyro.plate(f"{self.name}_data", n, subsample_size=subsample_size):
            x = None
            if data is not None:
                batch = jnp.asarray(numpyro.subsample(data, event_dim=1), params["a"].dtype)
                mu1, mu2 = jax.lax.stop_gradient(self.mean_field(params, batch, num_mean_field))
                x = self.join(batch, mu1, mu2)
            numpyro.sample(self.site, self.distribution(params), obs=x)

    # -- samplers -------------------------------------------------------------------------------

    def gibbs_sweep(self, rng_key, params, state: DBMState, beta=1.0) -> DBMState:
        """One sweep at inverse temperature ``beta``: :math:`h^1 \\mid (v, h^2)`, then
        :math:`v \\mid h^1` and :math:`h^2 \\mid h^1` in parallel. Any batch shape."""
        p = params
        k1, kv, k2 = jax.random.split(rng_key, 3)
        v, _, h2 = state
        ph1 = jax.nn.sigmoid(beta * (v @ p["W1"] + h2 @ p["W2"].T + p["b1"]))
        h1 = jax.random.bernoulli(k1, ph1).astype(ph1.dtype)
        v, h2 = self._sample_v_h2(kv, k2, params, h1, beta)
        return DBMState(v, h1, h2)

    def _sample_v_h2(self, key_v, key_h2, params, h1, beta):
        p = params
        v = jax.random.bernoulli(key_v, jax.nn.sigmoid(beta * (h1 @ p["W1"].T + p["a"])))
        h2 = jax.random.bernoulli(key_h2, jax.nn.sigmoid(beta * (h1 @ p["W2"] + p["b2"])))
        return v.astype(h1.dtype), h2.astype(h1.dtype)

    def init_state(self, rng_key, num_chains: int) -> DBMState:
        """``num_chains`` uniform random configurations."""
        num_chains = check_int("num_chains", num_chains, 1)
        return self.split(self._uniform(rng_key, num_chains))

    def _uniform(self, rng_key, num_chains):
        return jax.random.bernoulli(rng_key, 0.5, (num_chains, self.num_units)).astype(
            jnp.result_type(float))

    def annealing_path(self, params, rao_blackwellize: bool = False) -> AnnealingPath:
        r"""A path over the joint state from the uniform distribution, Gibbs sweeps at each
        :math:`\beta` (:math:`\log Z_0 = (V + H_1 + H_2)\log 2`).

        ``rao_blackwellize=False`` (the sampler of :meth:`distribution`): :math:`f_\beta(x) =
        -\beta E(x)`, sweeps :math:`h^1 \mid (v, h^2)` then :math:`(v, h^2) \mid h^1`.
        ``rao_blackwellize=True`` (lower-variance AIS weights): :math:`f_\beta(x) = \log
        \sum_{v, h^2} e^{-\beta E}`, a function of :math:`h^1` alone, with sweeps that redraw
        :math:`(v, h^2) \mid h^1` first (a kernel on :math:`h^1` that leaves this marginal
        invariant); the same :math:`\log Z`, but :math:`f_1 \ne -E`, so use it for AIS only.
        """
        self.check_params(params)
        log_Z0 = self.num_units * math.log(2.0)

        def sample_base(rng_key, num_chains):
            return self._uniform(rng_key, num_chains)

        if rao_blackwellize:
            def logdensity_fn(beta, x):
                return self.log_marginal_h1(params, self.split(x).h1, beta)

            def transition(rng_key, beta, x):
                kv, k2, k1 = jax.random.split(rng_key, 3)
                v, h2 = self._sample_v_h2(kv, k2, params, self.split(x).h1, beta)
                ph1 = jax.nn.sigmoid(beta * (v @ params["W1"] + h2 @ params["W2"].T + params["b1"]))
                h1 = jax.random.bernoulli(k1, ph1).astype(v.dtype)
                return self.join(v, h1, h2).astype(x.dtype)
        else:
            def logdensity_fn(beta, x):
                return -beta * self.energy(params, x)

            def transition(rng_key, beta, x):
                state = self.split(jnp.asarray(x, params["a"].dtype))
                return self.join(*self.gibbs_sweep(rng_key, params, state, beta)).astype(x.dtype)

        return transition_path(logdensity_fn, transition, sample_base, log_Z0)

    def logz_ais(self, rng_key, params, *, rao_blackwellize: bool = True,
                 **kwargs) -> AISResult:
        """:math:`\\log Z` by AIS along :meth:`annealing_path` (Rao-Blackwellized by default);
        keyword arguments as :func:`numpyro_ebm.logz_ais`. ``positions`` are joint states
        (:meth:`split` them)."""
        return logz_ais(rng_key, self.annealing_path(params, rao_blackwellize), **kwargs)
