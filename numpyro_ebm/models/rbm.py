r"""Restricted Boltzmann machines: Bernoulli-Bernoulli (:class:`RBM`) and Gaussian-Bernoulli
(:class:`GaussianBernoulliRBM`).

A Bernoulli RBM over visible units :math:`v \in \{0,1\}^V` and hidden units
:math:`h \in \{0,1\}^H` has the energy and, with the hidden units summed out, the free energy

.. math::

    E(v, h) = -a^\top v - b^\top h - v^\top W h,\qquad
    F(v) = -a^\top v - \sum_{j=1}^H \operatorname{softplus}\big(b_j + (v^\top W)_j\big),

so :math:`p(v) = e^{-F(v)}/Z`. There are no links inside a layer, so the conditionals factorize:
:math:`p(h_j = 1 \mid v) = \sigma(b_j + (v^\top W)_j)` and
:math:`p(v_i = 1 \mid h) = \sigma(a_i + (W h)_i)`: one block Gibbs sweep
:math:`v \to h \to v` redraws each layer in parallel. With few hidden (or visible) units the
partition function is exact by enumerating the smaller layer:

.. math::

    \log Z = \operatorname{logsumexp}_{h \in \{0,1\}^H}
        \Big[b^\top h + \sum_{i=1}^V \operatorname{softplus}\big(a_i + (W h)_i\big)\Big].

In a NumPyro model the RBM is an :class:`~numpyro_ebm.Unnormalized` site over :math:`v` with
energy :math:`F` (:meth:`RBM.model`), trained by
:class:`~numpyro_ebm.estimators.contrastive.ContrastiveDivergence` /
``PersistentContrastiveDivergence`` through ``numpyro.infer.SVI`` with the block Gibbs kernel
:meth:`RBM.kernel`. Because :math:`\nabla_\theta F` already averages over
:math:`p(h \mid v)`, the CD loss on :math:`F` is the classical CD update with hidden
probabilities (Hinton 2002).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from blackjax.base import SamplingAlgorithm
from numpyro.distributions import constraints

from numpyro_ebm._validation import check_int, check_positive, is_concrete
from numpyro_ebm.distribution import Unnormalized
from numpyro_ebm.evaluation.ais import (
    AISResult,
    annealed_importance_sampling,
    check_betas,
    temperature_schedule,
)
from numpyro_ebm.evaluation.partition import logz_exact
from numpyro_ebm.sampling.annealing import transition_path
from numpyro_ebm.sampling.chains import ChainResult, sample_chains

__all__ = [
    "RBM",
    "GaussianBernoulliRBM",
    "RBMGibbsState",
    "RBMGibbsInfo",
    "bernoulli_base",
]

#: the largest layer :meth:`RBM.log_partition` enumerates (2**24 configurations).
MAX_ENUMERATION_UNITS = 24


class RBMGibbsState(NamedTuple):
    """State of an RBM block Gibbs chain over the visible units.

    :ivar position: the visible configuration ``v``, shape ``(V,)`` (dtype kept from the start).
    :ivar hidden: the last hidden draw ``h``, shape ``(H,)``.
    """

    position: jax.Array
    hidden: jax.Array


class RBMGibbsInfo(NamedTuple):
    """Information on one block Gibbs step: ``flip_rate`` (fraction of visible units changed),
    reported again as ``acceptance_rate`` (Gibbs draws are always accepted)."""

    acceptance_rate: jax.Array
    flip_rate: jax.Array


# ----------------------------------------------------------------------------- enumeration


def _log_sum_exp_over_layer(log_f: Callable, num_units: int, batch_size: int, owner: str):
    r""":math:`\log \sum_{u \in \{0,1\}^n} e^{f(u)}` with :func:`numpyro_ebm.evaluation.partition.logz_exact`.

    ``log_f`` maps ``(b, n)`` float 0/1 configurations to ``(b,)``.
    """
    if num_units > MAX_ENUMERATION_UNITS:
        raise ValueError(
            f"{owner}.log_partition enumerates the smaller layer: at most "
            f"{MAX_ENUMERATION_UNITS} units (2**{MAX_ENUMERATION_UNITS} configurations), got "
            f"{num_units}. Use `logz_ais` instead."
        )
    return logz_exact(lambda u: -log_f(u), num_units, (0, 1), batch_size)


# ----------------------------------------------------------------------------- Bernoulli RBM


def _check_params(name: str, params, shapes: dict) -> None:
    if not isinstance(params, dict):
        raise TypeError(
            f"{name}: `params` must be a dict with keys {sorted(shapes)} (e.g. from "
            f"`rbm.init_params(key)` or `rbm.get_params(svi_result.params)`), got "
            f"{type(params).__name__}."
        )
    missing = [k for k in shapes if k not in params]
    if missing:
        raise ValueError(f"{name}: `params` lacks {missing}; expected keys {sorted(shapes)}.")
    for k, shape in shapes.items():
        if tuple(jnp.shape(params[k])) != shape:
            raise ValueError(
                f"{name}: `params['{k}']` has shape {tuple(jnp.shape(params[k]))}, expected "
                f"{shape}."
            )


class RBM:
    r"""A Bernoulli-Bernoulli restricted Boltzmann machine (see the module docstring).

    Parameters are a dict ``{"W": (V, H), "a": (V,), "b": (H,)}``; every method takes them
    explicitly (pure functions), and :meth:`model` registers them as ``numpyro.param`` sites
    ``f"{name}_W"``, ``f"{name}_a"``, ``f"{name}_b"`` for ``SVI``.

    :param int num_visible: ``V``.
    :param int num_hidden: ``H``.
    :param float init_scale: standard deviation of the initial weights (Hinton's guide: 0.01).
    :param str name: prefix of the parameter sites and name of the observed site (``f"{name}_v"``
        unless ``site`` is given).

    **Example** (CD-1 through SVI)

    .. code-block:: python

        rbm = RBM(64, 16)
        cd = ContrastiveDivergence(rbm.kernel(), num_steps=1)
        svi = SVI(rbm.model, no_guide, optax.sgd(0.1), loss=cd)
        result = svi.run(jax.random.key(0), 5000, data, subsample_size=20)
        params = rbm.get_params(result.params)
        rbm.log_likelihood(params, test).mean()          # exact, nats per image
    """

    def __init__(self, num_visible: int, num_hidden: int, *, init_scale: float = 0.01,
                 name: str = "rbm", site: str | None = None):
        self.num_visible = check_int("num_visible", num_visible, 1)
        self.num_hidden = check_int("num_hidden", num_hidden, 1)
        check_positive("init_scale", init_scale)
        if not isinstance(name, str):
            raise TypeError(f"`name` must be a str, got {name!r}.")
        self.init_scale = float(init_scale)
        self.name = name
        self.site = f"{name}_v" if site is None else site
        self._traced_params = None

    def __repr__(self):
        return f"{type(self).__name__}(num_visible={self.num_visible}, num_hidden={self.num_hidden})"

    # -- parameters --------------------------------------------------------------------------

    @property
    def param_shapes(self) -> dict:
        return {"W": (self.num_visible, self.num_hidden), "a": (self.num_visible,),
                "b": (self.num_hidden,)}

    def _check(self, params):
        if is_concrete(params) or isinstance(params, dict):
            _check_params(repr(self), params, self.param_shapes)

    @staticmethod
    def _data_visible_bias(data, num_visible):
        """:math:`\\log(p / (1 - p))` of the data's pixel means, clipped (Hinton's guide)."""
        if data is None:
            return jnp.zeros((num_visible,))
        p = jnp.clip(jnp.mean(jnp.asarray(data, jnp.float32).reshape(-1, num_visible), 0),
                     0.01, 0.99)
        return jnp.log(p) - jnp.log1p(-p)

    def init_params(self, rng_key, data=None) -> dict:
        """Initial parameters: ``W ~ N(0, init_scale^2)``, ``b = 0``, ``a`` the logit of the
        data's visible means when ``data`` ``(N, V)`` is given (else 0)."""
        W = self.init_scale * jax.random.normal(rng_key, (self.num_visible, self.num_hidden))
        return {"W": W, "a": self._data_visible_bias(data, self.num_visible),
                "b": jnp.zeros((self.num_hidden,))}

    def get_params(self, svi_params: dict) -> dict:
        """``{"W", "a", "b"}`` from ``SVI``'s parameter dict (``svi_result.params``)."""
        try:
            return {k: svi_params[f"{self.name}_{k}"] for k in ("W", "a", "b")}
        except KeyError as err:
            raise ValueError(
                f"`svi_params` has no site {err.args[0]!r}; its sites are {sorted(svi_params)}. "
                "Were they trained with this RBM's `model` (same `name`)?"
            ) from None

    # -- energies and conditionals -----------------------------------------------------------

    def energy(self, params, v, h):
        """:math:`E(v, h) = -a^\\top v - b^\\top h - v^\\top W h`, shape ``batch``."""
        v, h = jnp.asarray(v, jnp.float32), jnp.asarray(h, jnp.float32)
        return -(v @ params["a"]) - (h @ params["b"]) - jnp.einsum("...i,ij,...j->...", v,
                                                                   params["W"], h)

    def free_energy(self, params, v):
        """:math:`F(v) = -a^\\top v - \\sum_j \\operatorname{softplus}(b_j + (v^\\top W)_j)`;
        ``v`` ``(..., V)`` -> ``(...)``."""
        v = jnp.asarray(v, jnp.float32)
        return -(v @ params["a"]) - jnp.sum(jax.nn.softplus(v @ params["W"] + params["b"]), -1)

    def hidden_probabilities(self, params, v):
        """:math:`p(h_j = 1 \\mid v) = \\sigma(b_j + (v^\\top W)_j)`: ``(..., V) -> (..., H)``;
        the RBM's features for a downstream classifier."""
        return jax.nn.sigmoid(jnp.asarray(v, jnp.float32) @ params["W"] + params["b"])

    def visible_probabilities(self, params, h):
        """:math:`p(v_i = 1 \\mid h) = \\sigma(a_i + (W h)_i)`: ``(..., H) -> (..., V)``."""
        return jax.nn.sigmoid(jnp.asarray(h, jnp.float32) @ params["W"].T + params["a"])

    def sample_hidden(self, rng_key, params, v):
        """Draw ``h ~ p(h | v)`` (float 0/1), any batch shape."""
        p = self.hidden_probabilities(params, v)
        return jax.random.bernoulli(rng_key, p).astype(p.dtype)

    def sample_visible(self, rng_key, params, h):
        """Draw ``v ~ p(v | h)`` (float 0/1), any batch shape."""
        p = self.visible_probabilities(params, h)
        return jax.random.bernoulli(rng_key, p).astype(p.dtype)

    def gibbs_sweep(self, rng_key, params, v):
        """One block Gibbs sweep ``v -> h -> v``; returns ``(v_new, h)`` (float)."""
        key_h, key_v = jax.random.split(rng_key)
        h = self.sample_hidden(key_h, params, v)
        return self.sample_visible(key_v, params, h), h

    # -- NumPyro -----------------------------------------------------------------------------

    def _register_params(self, data):
        V, H = self.num_visible, self.num_hidden
        scale = self.init_scale
        a0 = self._data_visible_bias(data, V)
        return {
            "W": numpyro.param(f"{self.name}_W", lambda key: scale * jax.random.normal(key, (V, H))),
            "a": numpyro.param(f"{self.name}_a", a0),
            "b": numpyro.param(f"{self.name}_b", jnp.zeros((H,))),
        }

    def distribution(self, params) -> Unnormalized:
        r"""The RBM over ``v`` as an :class:`~numpyro_ebm.Unnormalized` distribution with energy
        :math:`F`.

        Its declared support is the relaxation :math:`[0, 1]^V` (``constraints.unit_interval``),
        on which :math:`F` is defined too: the contrastive estimators train observed sites with
        continuous support and leave discrete-support sites to the class-label estimators. The
        data and the Gibbs chains stay in :math:`\{0, 1\}^V`."""
        return Unnormalized(lambda v: self.free_energy(params, v), (self.num_visible,),
                            support=constraints.unit_interval)

    def model(self, data=None, subsample_size: int | None = None):
        """A NumPyro model: the RBM's parameters as ``numpyro.param`` sites and the data as the
        observed :class:`~numpyro_ebm.Unnormalized` site ``self.site`` with energy :math:`F(v)`,
        under a plate over the ``N`` rows of ``data`` ``(N, V)``, subsampled to
        ``subsample_size`` rows per step when given.

        Use ``SVI(rbm.model, no_guide, optim, loss=ContrastiveDivergence(rbm.kernel(), k))``.
        """
        if data is not None:
            shape = jnp.shape(data)
            if len(shape) != 2 or shape[1] != self.num_visible:
                raise ValueError(
                    f"{self!r}.model: `data` must have shape (N, {self.num_visible}), got {shape}."
                )
        params = self._register_params(data)
        # The block Gibbs kernel of `self.kernel()` reads the parameters of the latest trace.
        self._traced_params = params
        n = 1 if data is None else jnp.shape(data)[0]
        with numpyro.plate(f"{self.name}_data", n, subsample_size=subsample_size):
            batch = None if data is None else numpyro.subsample(data, event_dim=1)
            numpyro.sample(self.site, self.distribution(params), obs=batch)

    # -- sampling ----------------------------------------------------------------------------

    def _step_fn(self, get_params, num_sweeps):
        def step(rng_key, state: RBMGibbsState):
            params = jax.lax.stop_gradient(get_params())
            v0 = state.position

            def sweep(v, key):
                v, h = self.gibbs_sweep(key, params, v)
                return v, h

            v, hs = jax.lax.scan(sweep, v0.astype(jnp.float32), jax.random.split(rng_key,
                                                                                 num_sweeps))
            rate = jnp.mean((v != v0).astype(jnp.float32))
            return RBMGibbsState(v.astype(v0.dtype), hs[-1]), RBMGibbsInfo(rate, rate)

        return step

    def kernel(self, params=None, num_sweeps: int = 1) -> Callable:
        r"""A block Gibbs kernel factory ``logdensity_fn -> blackjax.SamplingAlgorithm`` over ``v``.

        Each step runs ``num_sweeps`` sweeps :math:`v \to h \sim p(h\mid v) \to v \sim
        p(v \mid h)`; the state is :class:`RBMGibbsState` ``(position=v, hidden=h)``. The
        ``logdensity_fn`` the factory receives is not used: the RBM's conditionals need its
        weights, not only :math:`F`.

        :param params: the parameters to sample under (outside training, e.g. for
            :func:`numpyro_ebm.sample_chains`). ``None`` (the form for the CD/PCD losses): the
            parameters of the latest trace of :meth:`model`, i.e. those the loss traced the model
            with (the loss traces the model with stop-gradient parameters just before it builds
            the kernel; the kernel stops gradients again).
        :param int num_sweeps: Gibbs sweeps per step.
        """
        num_sweeps = check_int("num_sweeps", num_sweeps, 1)
        if params is not None:
            self._check(params)

        def get_params():
            if params is not None:
                return params
            if self._traced_params is None:
                raise ValueError(
                    f"{self!r}.kernel(): no parameters given and `model` has not been traced; "
                    "pass the parameters, `rbm.kernel(params)`, to sample outside training."
                )
            return self._traced_params

        step = self._step_fn(get_params, num_sweeps)

        def factory(logdensity_fn=None) -> SamplingAlgorithm:
            def init(position, rng_key=None):
                position = jnp.asarray(position)
                return RBMGibbsState(position, jnp.zeros(position.shape[:-1] + (self.num_hidden,)))

            return SamplingAlgorithm(init, step)

        return factory

    def init_visible(self, rng_key, params, num_chains: int):
        """``(num_chains, V)`` float draws from the factorized :math:`\\prod_i
        \\mathrm{Bernoulli}(\\sigma(a_i))` (a start for chains)."""
        num_chains = check_int("num_chains", num_chains, 1)
        p = jax.nn.sigmoid(params["a"])
        return jax.random.bernoulli(rng_key, p, (num_chains, self.num_visible)).astype(jnp.float32)

    def sample(self, rng_key, params, num_chains: int, num_steps: int, num_samples: int = 0,
               thin: int = 1, init_positions=None) -> ChainResult:
        """Draw from the RBM with :func:`numpyro_ebm.sample_chains` and :meth:`kernel`.

        Chains start from :meth:`init_visible` unless ``init_positions`` ``(num_chains, V)``
        is given. Returns a :class:`~numpyro_ebm.ChainResult` (``positions`` ``(num_chains, V)``).
        """
        self._check(params)
        init_key, run_key = jax.random.split(rng_key)
        if init_positions is None:
            init_positions = self.init_visible(init_key, params, num_chains)
        return sample_chains(run_key, lambda v: -self.free_energy(params, v),
                             self.kernel(params), init_positions, num_steps, num_samples, thin)

    # -- partition function and likelihood ---------------------------------------------------

    def log_partition(self, params, batch_size: int = 16_384) -> jax.Array:
        """Exact :math:`\\log Z`, enumerating the smaller layer (at most 24 units).

        Hidden layer: :math:`\\operatorname{logsumexp}_h [b^\\top h + \\sum_i
        \\operatorname{softplus}(a_i + (Wh)_i)]`; visible layer: :math:`\\operatorname{logsumexp}_v
        [-F(v)]`, by :func:`numpyro_ebm.evaluation.partition.logz_exact` (``batch_size`` configurations at a
        time); jittable and differentiable in ``params``.
        """
        self._check(params)
        W, a, b = params["W"], params["a"], params["b"]
        if self.num_hidden <= self.num_visible:
            return _log_sum_exp_over_layer(
                lambda h: h @ b + jnp.sum(jax.nn.softplus(h @ W.T + a), -1), self.num_hidden,
                batch_size, repr(self))
        return _log_sum_exp_over_layer(lambda v: -self.free_energy(params, v), self.num_visible,
                                       batch_size, repr(self))

    def log_likelihood(self, params, v, log_Z=None):
        """:math:`\\log p(v) = -F(v) - \\log Z`, per example (exact :math:`\\log Z` when not
        given: pass an AIS estimate for large layers)."""
        if log_Z is None:
            log_Z = self.log_partition(params)
        return -self.free_energy(params, v) - log_Z

    def logz_ais(self, rng_key, params, num_temperatures: int = 1000, num_chains: int = 100, *,
                 betas=None, data=None, base_visible_bias=None, num_sweeps: int = 1,
                 schedule: str = "linear") -> AISResult:
        r""":math:`\log Z` by AIS (Salakhutdinov & Murray 2008), with exact Gibbs transitions.

        The path runs from a base RBM with no weights and visible biases :math:`a_0` (a
        factorized Bernoulli; :math:`\log Z_0 = H\log 2 + \sum_i \operatorname{softplus}(a_{0,i})`)
        to this RBM through the RBMs with weights :math:`\beta W`, hidden biases
        :math:`\beta b` and visible biases :math:`(1-\beta)a_0 + \beta a`, whose unnormalized
        marginal over ``v`` is

        .. math:: f_\beta(v) = ((1-\beta)a_0 + \beta a)^\top v + \sum_j
            \operatorname{softplus}(\beta(b_j + (v^\top W)_j));

        each temperature applies ``num_sweeps`` block Gibbs sweeps of that RBM.

        :param params: the RBM's parameters.
        :param int num_temperatures: ``K`` (S&M use ~14,500; 1,000 to 10,000 is typical here).
        :param int num_chains: AIS runs.
        :param betas: optional explicit schedule (overrides ``num_temperatures``/``schedule``).
        :param data: optional training data ``(N, V)``: then :math:`a_0` is the logit of its
            visible means (a base closer to the target, the S&M choice).
        :param base_visible_bias: :math:`a_0` directly; default from ``data``, else 0.
        :param str schedule: see :func:`numpyro_ebm.evaluation.ais.temperature_schedule` (default linear,
            as in S&M).
        :return: :class:`~numpyro_ebm.AISResult` (``positions`` are the final ``v``).
        """
        self._check(params)
        num_chains = check_int("num_chains", num_chains, 1)
        num_sweeps = check_int("num_sweeps", num_sweeps, 1)
        if betas is None:
            betas = temperature_schedule(num_temperatures, schedule)
        betas = check_betas(betas)
        if base_visible_bias is None:
            base_visible_bias = self._data_visible_bias(data, self.num_visible)
        a0 = jnp.broadcast_to(jnp.asarray(base_visible_bias, jnp.float32), (self.num_visible,))
        return _rbm_ais(rng_key, params, a0, betas, num_chains, num_sweeps)


@partial(jax.jit, static_argnames=("num_chains", "num_sweeps"))
def _rbm_ais(rng_key, params, a0, betas, num_chains, num_sweeps):
    W, a, b = params["W"], params["a"], params["b"]
    H = W.shape[1]

    def log_density(beta, v):
        return ((1.0 - beta) * a0 + beta * a) @ v + jnp.sum(jax.nn.softplus(beta * (v @ W + b)))

    def transition(key, beta, v):
        def sweep(v, k):
            kh, kv = jax.random.split(k)
            h = jax.random.bernoulli(kh, jax.nn.sigmoid(beta * (v @ W + b))).astype(v.dtype)
            pv = jax.nn.sigmoid((1.0 - beta) * a0 + beta * (W @ h + a))
            return jax.random.bernoulli(kv, pv).astype(v.dtype), None

        return jax.lax.scan(sweep, v, jax.random.split(key, num_sweeps))[0]

    init_key, run_key = jax.random.split(rng_key)
    v0 = jax.random.bernoulli(init_key, jax.nn.sigmoid(a0), (num_chains, a0.shape[0]))
    log_Z0 = H * math.log(2.0) + jnp.sum(jax.nn.softplus(a0))
    path = transition_path(log_density, transition, None, log_Z0)
    return annealed_importance_sampling(run_key, path, betas, num_chains,
                                        init_positions=v0.astype(jnp.float32))


# ----------------------------------------------------------------------------- Gaussian-Bernoulli


class GaussianBernoulliRBM(RBM):
    r"""A Gaussian-Bernoulli RBM: real visible units :math:`v \in \mathbb R^V`, binary hidden.

    .. math::

        E(v, h) = \sum_i \frac{(v_i - a_i)^2}{2\sigma_i^2} - b^\top h
                  - \sum_{ij} \frac{v_i}{\sigma_i} W_{ij} h_j,\qquad
        F(v) = \sum_i \frac{(v_i - a_i)^2}{2\sigma_i^2}
               - \sum_j \operatorname{softplus}\big(b_j + ((v/\sigma)^\top W)_j\big),

    with :math:`p(h_j=1\mid v) = \sigma(b_j + ((v/\sigma)^\top W)_j)` and
    :math:`p(v \mid h) = \mathcal N(a + \sigma \odot W h, \operatorname{diag}\sigma^2)`. Exact
    partition function by enumerating the hidden layer, the Gaussian integral done in closed form:

    .. math::

        \log Z = \sum_i \log(\sqrt{2\pi}\sigma_i) + \operatorname{logsumexp}_h
            \Big[b^\top h + \sum_i \Big(\frac{a_i c_i}{\sigma_i} + \frac{c_i^2}{2}\Big)\Big],
        \quad c = W h .

    Parameters ``{"W", "a", "b", "log_sigma"}``; ``log_sigma`` is fixed at its initial value
    (``log(sigma)``, default 0: standardize the data) unless ``learn_sigma=True``.
    """

    def __init__(self, num_visible: int, num_hidden: int, *, sigma=1.0, learn_sigma: bool = False,
                 init_scale: float = 0.01, name: str = "gbrbm", site: str | None = None):
        super().__init__(num_visible, num_hidden, init_scale=init_scale, name=name, site=site)
        check_positive("sigma", sigma)
        self.sigma = sigma
        self.learn_sigma = bool(learn_sigma)

    @property
    def param_shapes(self) -> dict:
        return {**super().param_shapes, "log_sigma": (self.num_visible,)}

    def _log_sigma0(self):
        return jnp.broadcast_to(jnp.log(jnp.asarray(self.sigma, jnp.float32)), (self.num_visible,))

    def init_params(self, rng_key, data=None) -> dict:
        """``W ~ N(0, init_scale^2)``, ``b = 0``, ``a`` the data mean (or 0), ``log_sigma``."""
        W = self.init_scale * jax.random.normal(rng_key, (self.num_visible, self.num_hidden))
        a = jnp.zeros((self.num_visible,)) if data is None else jnp.mean(jnp.asarray(data), 0)
        return {"W": W, "a": a, "b": jnp.zeros((self.num_hidden,)), "log_sigma": self._log_sigma0()}

    def get_params(self, svi_params: dict) -> dict:
        params = super().get_params(svi_params)
        params["log_sigma"] = svi_params.get(f"{self.name}_log_sigma", self._log_sigma0())
        return params

    def _register_params(self, data):
        V, H, scale = self.num_visible, self.num_hidden, self.init_scale
        a0 = jnp.zeros((V,)) if data is None else jnp.mean(jnp.asarray(data), 0)
        params = {
            "W": numpyro.param(f"{self.name}_W", lambda key: scale * jax.random.normal(key, (V, H))),
            "a": numpyro.param(f"{self.name}_a", a0),
            "b": numpyro.param(f"{self.name}_b", jnp.zeros((H,))),
        }
        if self.learn_sigma:
            params["log_sigma"] = numpyro.param(f"{self.name}_log_sigma", self._log_sigma0())
        else:
            params["log_sigma"] = self._log_sigma0()
        return params

    def distribution(self, params) -> Unnormalized:
        return Unnormalized(lambda v: self.free_energy(params, v), (self.num_visible,))

    def energy(self, params, v, h):
        sigma = jnp.exp(params["log_sigma"])
        h = jnp.asarray(h, jnp.float32)
        quad = jnp.sum((v - params["a"]) ** 2 / (2 * sigma**2), -1)
        return quad - h @ params["b"] - jnp.einsum("...i,ij,...j->...", v / sigma, params["W"], h)

    def free_energy(self, params, v):
        sigma = jnp.exp(params["log_sigma"])
        quad = jnp.sum((v - params["a"]) ** 2 / (2 * sigma**2), -1)
        return quad - jnp.sum(jax.nn.softplus((v / sigma) @ params["W"] + params["b"]), -1)

    def hidden_probabilities(self, params, v):
        sigma = jnp.exp(params["log_sigma"])
        return jax.nn.sigmoid((v / sigma) @ params["W"] + params["b"])

    def visible_mean(self, params, h):
        """:math:`\\mathbb E[v \\mid h] = a + \\sigma \\odot W h`."""
        return params["a"] + jnp.exp(params["log_sigma"]) * (jnp.asarray(h, jnp.float32)
                                                              @ params["W"].T)

    def visible_probabilities(self, params, h):
        raise TypeError("GaussianBernoulliRBM has real visible units: use `visible_mean`.")

    def sample_visible(self, rng_key, params, h):
        mean = self.visible_mean(params, h)
        return mean + jnp.exp(params["log_sigma"]) * jax.random.normal(rng_key, mean.shape)

    def init_visible(self, rng_key, params, num_chains: int):
        """``(num_chains, V)`` draws from :math:`\\mathcal N(a, \\sigma^2)`."""
        num_chains = check_int("num_chains", num_chains, 1)
        noise = jax.random.normal(rng_key, (num_chains, self.num_visible))
        return params["a"] + jnp.exp(params["log_sigma"]) * noise

    def log_partition(self, params, batch_size: int = 16_384) -> jax.Array:
        self._check(params)
        W, a, b, log_sigma = params["W"], params["a"], params["b"], params["log_sigma"]
        sigma = jnp.exp(log_sigma)

        def log_f(h):
            c = h @ W.T
            return h @ b + jnp.sum(a * c / sigma + 0.5 * c**2, -1)

        gauss = jnp.sum(log_sigma) + 0.5 * self.num_visible * math.log(2 * math.pi)
        return gauss + _log_sum_exp_over_layer(log_f, self.num_hidden, batch_size, repr(self))

    def logz_ais(self, *args, **kwargs):
        raise NotImplementedError(
            "GaussianBernoulliRBM: use `log_partition` (exact for up to 24 hidden units) or the "
            "general `numpyro_ebm.logz_ais` with a Gaussian base and MALA transitions."
        )


def bernoulli_base(num_visible: int, logits=None) -> dist.Distribution:
    """A factorized Bernoulli over ``{0,1}^V`` (for chain starts or a PCD ``init_dist``)."""
    logits = jnp.zeros((num_visible,)) if logits is None else jnp.asarray(logits)
    return dist.Bernoulli(logits=logits).to_event(1)
