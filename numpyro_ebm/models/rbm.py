# Over ~400 lines on purpose: RBMBase and its two visible layers (RBM, GaussianBernoulliRBM) are one
# design, a skeleton (sampler, annealing path, enumeration, NumPyro model) and the few hooks each
# layer fills in; split apart, each hook would sit away from the only code that calls it.
r"""Restricted Boltzmann machines: Bernoulli-Bernoulli (:class:`RBM`) and Gaussian-Bernoulli
(:class:`GaussianBernoulliRBM`), on one base (:class:`RBMBase`).

An RBM over visible units :math:`v` and binary hidden units :math:`h \in \{0,1\}^H` has the joint
energy and, with the hidden units summed out, the free energy

.. math::

    E(v, h) = E_{\rm vis}(v) - b^\top h - \phi(v)^\top W h,\qquad
    F(v) = E_{\rm vis}(v) - \sum_{j=1}^H \operatorname{softplus}\big(b_j + (\phi(v)^\top W)_j\big),

with :math:`E_{\rm vis}(v) = -a^\top v`, :math:`\phi(v) = v` for binary visible units (:class:`RBM`)
and :math:`E_{\rm vis}(v) = \sum_i (v_i - a_i)^2 / (2\sigma_i^2)`, :math:`\phi(v) = v / \sigma`
for real ones (:class:`GaussianBernoulliRBM`); :math:`p(v) = e^{-F(v)}/Z`. There are no links
inside a layer, so :math:`p(h_j = 1 \mid v) = \sigma(b_j + (\phi(v)^\top W)_j)` and
:math:`p(v \mid h)` factorizes too: one block Gibbs sweep :math:`v \to h \to v` redraws each layer
in parallel. The partition function is exact by enumerating the hidden layer,
:math:`\log Z = \operatorname{logsumexp}_h \log \sum_v e^{-E(v, h)}`.

**Annealing path** (Salakhutdinov & Murray 2008): the RBMs whose weights and hidden biases are
scaled by :math:`\beta` and whose visible part moves from a base :math:`a_0` to :math:`a`,

.. math::

    f_\beta(v) = -E_{\rm vis}^{(\beta)}(v)
        + \sum_j \operatorname{softplus}\big(\beta (b_j + (\phi(v)^\top W)_j)\big),

:math:`-E^{(\beta)}_{\rm vis}(v) = ((1-\beta)a_0 + \beta a)^\top v` (Bernoulli; base: a
factorized Bernoulli, :math:`\log Z_0 = H\log 2 + \sum_i\operatorname{softplus}(a_{0,i})`) or
:math:`-\sum_i (v_i - m_{\beta,i})^2/(2\sigma_i^2)`, :math:`m_\beta = (1-\beta)a_0 + \beta a`
(Gaussian; base :math:`\mathcal N(a_0, \sigma^2)`, :math:`\log Z_0 = H\log 2 + \sum_i
\log(\sqrt{2\pi}\sigma_i)`). Block Gibbs is exact at every :math:`\beta`; at :math:`\beta = 1`
it is the model's sampler (``rbm.kernel(params)``, the sampler of ``rbm.distribution(params)``).

**Training** goes through ``SVI``: :meth:`RBMBase.model` observes the data at an
:class:`~numpyro_ebm.Unnormalized` site with energy :math:`F`, and
``ContrastiveDivergence(None, num_steps=1)`` (``kernel=None``: the site's own block Gibbs sampler)
is the classical CD-1 with hidden probabilities (Hinton 2002), since :math:`\nabla_\theta F`
already averages over :math:`p(h \mid v)`. The binary RBM's site has the binary support
``constraints.boolean``; the contrastive estimators train it because it is not a label site (its
event has a dimension, see :func:`numpyro_ebm.estimators.contrastive.is_label_site`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from blackjax.base import SamplingAlgorithm
from numpyro.distributions import constraints

from numpyro_ebm._validation import (
    check_finite,
    check_float,
    check_in_set,
    check_int,
    check_positive,
)
from numpyro_ebm.evaluation.ais import AISResult, logz_ais
from numpyro_ebm.evaluation.partition import logz_exact
from numpyro_ebm.models.base import EnergyModel
from numpyro_ebm.models.lattice import uniform01
from numpyro_ebm.sampling.annealing import AnnealingPath
from numpyro_ebm.sampling.chains import ChainResult

__all__ = [
    "MAX_ENUMERATION_UNITS",
    "RBM",
    "RBMBase",
    "GaussianBernoulliRBM",
    "RBMGibbsState",
    "RBMGibbsInfo",
    "bernoulli_base",
    "data_visible_bias",
    "logsumexp_binary_layer",
]

#: the largest layer that :meth:`RBMBase.log_partition` enumerates (2**24 configurations).
MAX_ENUMERATION_UNITS = 24

_REQUIRED = object()


class RBMGibbsState(NamedTuple):
    """State of an RBM block Gibbs chain over the visible units.

    :ivar position: the visible configuration ``v``, shape ``(V,)`` (dtype kept from the start).
    :ivar hidden: the last hidden draw ``h``, shape ``(H,)`` (zeros before the first step).

    The state holds no log density: a sweep does not need it, and evaluating
    :math:`f_\\beta(v)` (a softplus per hidden unit) after every sweep cost a third of the
    sweep's time. :func:`~numpyro_ebm.sample_chains` evaluates it once, for the final positions
    (``ChainResult.logdensity``), through the kernel's ``init.logdensity_fn``.
    """

    position: jax.Array
    hidden: jax.Array


class RBMGibbsInfo(NamedTuple):
    """Information on one block Gibbs step: ``flip_rate`` (fraction of visible units changed),
    reported again as ``acceptance_rate`` (Gibbs draws are always accepted)."""

    acceptance_rate: jax.Array
    flip_rate: jax.Array


def logsumexp_binary_layer(log_f: Callable, num_units: int, chunk_size: int, owner: str):
    r""":math:`\log \sum_{u \in \{0,1\}^n} e^{f(u)}` by :func:`numpyro_ebm.logz_exact`.

    ``log_f`` maps ``(b, n)`` float 0/1 configurations to ``(b,)``; at most
    :data:`MAX_ENUMERATION_UNITS` units (``owner`` names the model in the error).
    """
    if num_units > MAX_ENUMERATION_UNITS:
        raise ValueError(
            f"{owner}.log_partition enumerates a layer of binary units: at most "
            f"{MAX_ENUMERATION_UNITS} units (2**{MAX_ENUMERATION_UNITS} configurations), got "
            f"{num_units}. Use `logz_ais` instead."
        )
    return logz_exact(lambda u: -log_f(u), num_units, (0, 1), chunk_size)


def data_visible_bias(data, num_visible: int):
    """:math:`\\log(p / (1 - p))` of the data's visible means, clipped to ``[0.01, 0.99]``
    (Hinton's guide); zeros ``(V,)`` when ``data`` is ``None``."""
    if data is None:
        return jnp.zeros((num_visible,))
    p = jnp.clip(jnp.mean(jnp.asarray(data, jnp.float32).reshape(-1, num_visible), 0), 0.01, 0.99)
    return jnp.log(p) - jnp.log1p(-p)


def bernoulli_base(num_visible: int, logits=None) -> dist.Distribution:
    """A factorized Bernoulli over ``{0,1}^V`` (for chain starts or a PCD ``init_dist``)."""
    logits = jnp.zeros((num_visible,)) if logits is None else jnp.asarray(logits)
    return dist.Bernoulli(logits=logits).to_event(1)


class RBMBase(EnergyModel):
    r"""What every RBM shares (module docstring): parameters ``{"W": (V, H), "a": (V,),
    "b": (H,)}`` (plus what a subclass adds), the hidden conditional, the free energy, block Gibbs,
    the annealing path, exact :math:`\log Z` by enumerating the hidden layer, and the NumPyro
    model.

    A subclass defines the visible layer: :meth:`visible_features` (:math:`\phi`),
    :meth:`visible_energy` (:math:`E_{\rm vis}`), :meth:`log_marginal_hidden`, and the three
    ``path_*`` methods giving the tempered visible conditional, the base and its normalizer.
    """

    support = None

    def __init__(self, num_visible: int, num_hidden: int, *, init_scale: float = 0.01,
                 name: str = "rbm", site: str | None = None):
        self.num_visible = check_int("num_visible", num_visible, 1)
        self.num_hidden = check_int("num_hidden", num_hidden, 1)
        self.init_scale = check_float("init_scale", init_scale, positive=True)
        self.set_names(name, site, "v")

    def __repr__(self):
        return f"{type(self).__name__}(num_visible={self.num_visible}, num_hidden={self.num_hidden})"

    @property
    def event_shape(self) -> tuple:
        return (self.num_visible,)

    @property
    def param_shapes(self) -> dict:
        return {"W": (self.num_visible, self.num_hidden), "a": (self.num_visible,),
                "b": (self.num_hidden,)}

    # -- what a visible layer defines -------------------------------------------------------------

    def visible_features(self, params, v):
        r""":math:`\phi(v)`, what the weights multiply: ``(..., V) -> (..., V)``."""
        raise NotImplementedError

    def visible_energy(self, params, v):
        r""":math:`E_{\rm vis}(v)`: ``(..., V) -> (...)``."""
        raise NotImplementedError

    def log_marginal_hidden(self, params, h):
        r""":math:`\log \sum_v e^{-E(v, h)}` (an integral for real ``v``): ``(..., H) -> (...)``."""
        raise NotImplementedError

    def path_visible_logdensity(self, params, a0, beta, v):
        r"""The visible part of :math:`f_\beta(v)`, :math:`-E^{(\beta)}_{\rm vis}(v)`."""
        raise NotImplementedError

    def path_sample_visible(self, rng_key, params, a0, beta, h):
        r"""Draw ``v`` from the tempered conditional :math:`p_\beta(v \mid h)`."""
        raise NotImplementedError

    #: Optional ``path_visible_from_uniform(u, params, a0, beta, h)``: the draw of
    #: :meth:`path_sample_visible` as a function of uniforms ``u`` ``(..., V)`` on [0, 1). A
    #: model that has it (binary visible units) draws each layer's uniforms in its block Gibbs
    #: sweep from disjoint counter ranges of the chain's key (``lattice.uniform01``).
    path_visible_from_uniform = None

    def path_sample_base(self, rng_key, params, a0, num_chains: int):
        """``(num_chains, V)`` exact draws of the visible base (``beta = 0``)."""
        raise NotImplementedError

    def path_log_Z_visible(self, params, a0):
        """:math:`\\log` of the visible base's normalizer."""
        raise NotImplementedError

    def default_base_visible_bias(self, params, data=None):
        """:math:`a_0` of the annealing path when none is given."""
        raise NotImplementedError

    def initial_visible_bias(self, data=None):
        """``a`` of :meth:`init_params` and :meth:`model` from the training data (or ``None``)."""
        raise NotImplementedError

    # -- parameters -----------------------------------------------------------------------------

    def _as_float(self, params, x):
        return jnp.asarray(x, jnp.result_type(params["W"]))

    def init_params(self, rng_key=None, data=None) -> dict:
        """Initial parameters: ``W ~ N(0, init_scale^2)`` (``rng_key`` defaults to
        ``jax.random.key(0)``), ``b = 0``, ``a`` from the data ``(N, V)`` when given."""
        rng_key = jax.random.key(0) if rng_key is None else rng_key
        W = self.init_scale * jax.random.normal(rng_key, (self.num_visible, self.num_hidden))
        return {"W": W, "a": self.initial_visible_bias(data), "b": jnp.zeros((self.num_hidden,))}

    def _register_params(self, data) -> dict:
        V, H, scale = self.num_visible, self.num_hidden, self.init_scale
        return {
            "W": numpyro.param(f"{self.name}_W", lambda key: scale * jax.random.normal(key, (V, H))),
            "a": numpyro.param(f"{self.name}_a", self.initial_visible_bias(data)),
            "b": numpyro.param(f"{self.name}_b", jnp.zeros((H,))),
        }

    # -- energies and conditionals --------------------------------------------------------------

    def hidden_input(self, params, v):
        r""":math:`b + \phi(v)^\top W`: ``(..., V) -> (..., H)``."""
        return self.visible_features(params, self._as_float(params, v)) @ params["W"] + params["b"]

    def joint_energy(self, params, v, h):
        """:math:`E(v, h) = E_{\\rm vis}(v) - b^\\top h - \\phi(v)^\\top W h`, broadcast batch."""
        v, h = self._as_float(params, v), self._as_float(params, h)
        phi = self.visible_features(params, v)
        return (self.visible_energy(params, v) - h @ params["b"]
                - jnp.einsum("...i,ij,...j->...", phi, params["W"], h))

    def free_energy(self, params, v):
        """:math:`F(v) = E_{\\rm vis}(v) - \\sum_j \\operatorname{softplus}(b_j + (\\phi(v)^\\top
        W)_j)`: ``(..., V) -> (...)``."""
        v = self._as_float(params, v)
        return self.visible_energy(params, v) - jnp.sum(
            jax.nn.softplus(self.hidden_input(params, v)), -1)

    def energy(self, params, v):
        """The model's energy over ``v``: the free energy :math:`F(v)` (protocol name)."""
        return self.free_energy(params, v)

    def hidden_probabilities(self, params, v):
        """:math:`p(h_j = 1 \\mid v)`: ``(..., V) -> (..., H)``; the RBM's features for a
        downstream classifier."""
        return jax.nn.sigmoid(self.hidden_input(params, v))

    def sample_hidden(self, rng_key, params, v):
        """Draw ``h ~ p(h | v)`` (float 0/1), any batch shape."""
        p = self.hidden_probabilities(params, v)
        return jax.random.bernoulli(rng_key, p).astype(p.dtype)

    def sample_visible(self, rng_key, params, h):
        """Draw ``v ~ p(v | h)``, any batch shape."""
        return self.path_sample_visible(rng_key, params, params["a"], 1.0, h)

    def gibbs_sweep(self, rng_key, params, v):
        """One block Gibbs sweep ``v -> h -> v``; returns ``(v_new, h)`` (float)."""
        key_h, key_v = jax.random.split(rng_key)
        h = self.sample_hidden(key_h, params, v)
        return self.sample_visible(key_v, params, h), h

    # -- NumPyro --------------------------------------------------------------------------------

    def model(self, data=None, *, subsample_size: int | None = None):
        """A NumPyro model: the parameters as ``numpyro.param`` sites ``f"{name}_W"`` (``_a``,
        ``_b``, ...) and the rows of ``data`` ``(N, V)`` observed at the
        :class:`~numpyro_ebm.Unnormalized` site ``self.site`` (energy :math:`F`, carrying the
        block Gibbs sampler), under a plate subsampled to ``subsample_size`` rows per step.

        Train with ``SVI(rbm.model, no_guide, optim, loss=ContrastiveDivergence(None, 1))``.
        """
        if data is not None:
            shape = jnp.shape(data)
            if len(shape) != 2 or shape[1] != self.num_visible:
                raise ValueError(
                    f"{self!r}.model: `data` must have shape (N, {self.num_visible}), got {shape}."
                )
            if self.support is constraints.boolean:
                check_in_set("data", data, (0, 1), f"{self!r}.model")
            else:
                check_finite("data", data)
        params = self._register_params(data)
        n = 1 if data is None else jnp.shape(data)[0]
        with numpyro.plate(f"{self.name}_data", n, subsample_size=subsample_size):
            batch = None if data is None else numpyro.subsample(data, event_dim=1)
            numpyro.sample(self.site, self.distribution(params), obs=batch)

    # -- samplers -------------------------------------------------------------------------------

    def annealing_path(self, params, base_visible_bias=None) -> AnnealingPath:
        r"""The Salakhutdinov-Murray path of the module docstring, exact block Gibbs at every
        :math:`\beta`; the kernel's state is :class:`RBMGibbsState`, its info
        :class:`RBMGibbsInfo`.

        :param params: the parameters.
        :param base_visible_bias: :math:`a_0` ``(V,)`` (default
            :meth:`default_base_visible_bias`).
        """
        self.check_params(params)
        if base_visible_bias is None:
            base_visible_bias = self.default_base_visible_bias(params)
        a0 = jnp.broadcast_to(self._as_float(params, base_visible_bias), (self.num_visible,))

        def logdensity_fn(beta, v):
            v = self._as_float(params, v)
            return self.path_visible_logdensity(params, a0, beta, v) + jnp.sum(
                jax.nn.softplus(beta * self.hidden_input(params, v)), -1)

        def kernel(beta) -> SamplingAlgorithm:
            def init(position, rng_key=None):
                position = jnp.asarray(position)
                hidden = jnp.zeros(position.shape[:-1] + (self.num_hidden,), params["W"].dtype)
                return RBMGibbsState(position, hidden)

            # the log density of this kernel's target, for a caller that wants it (sample_chains)
            init.logdensity_fn = functools.partial(logdensity_fn, beta)

            def step(rng_key, state: RBMGibbsState):
                v0 = state.position
                p_h = jax.nn.sigmoid(beta * self.hidden_input(params, v0))
                if self.path_visible_from_uniform is None:
                    key_h, key_v = jax.random.split(rng_key)
                    h = jax.random.bernoulli(key_h, p_h).astype(p_h.dtype)
                    v = self.path_sample_visible(key_v, params, a0, beta, h)
                else:
                    # each layer's uniforms from its own counters of the chain's key: two
                    # separate draws, which the visible layer's need not wait for h to make
                    # (one draw for both layers ran at 0.75-0.80x a hand-written sweep on 2 CPU
                    # cores, these at 1.15-1.19x), and no key split (it cost a CD-1 update ~10%)
                    u_h = uniform01(rng_key, p_h.shape, p_h.dtype)
                    u_v = uniform01(rng_key, p_h.shape[:-1] + (self.num_visible,), p_h.dtype,
                                    offset=math.prod(p_h.shape))  # after u_h's counters
                    h = (u_h < p_h).astype(p_h.dtype)
                    v = self.path_visible_from_uniform(u_v, params, a0, beta, h)
                v = v.astype(v0.dtype)
                rate = jnp.mean((v != v0).astype(p_h.dtype))
                return RBMGibbsState(v, h), RBMGibbsInfo(rate, rate)

            return SamplingAlgorithm(init, step)

        def sample_base(rng_key, num_chains):
            return self.path_sample_base(rng_key, params, a0, num_chains)

        log_Z_base = self.num_hidden * math.log(2.0) + self.path_log_Z_visible(params, a0)
        return AnnealingPath(logdensity_fn, kernel, sample_base, log_Z_base)

    def kernel(self, params=_REQUIRED) -> SamplingAlgorithm:
        """The exact block Gibbs sampler of :math:`e^{-F}` under ``params``: a built
        ``blackjax.SamplingAlgorithm`` (``annealing_path(params).kernel(1.0)``); one step is one
        sweep ``v -> h -> v``. For CD/PCD pass ``kernel=None`` to the estimator instead."""
        if params is _REQUIRED or params is None:
            raise TypeError(
                f"{self!r}.kernel(params): `params` is required (a dict from `init_params` or "
                "`get_params(svi_result.params)`): a model remembers no parameters. To train with "
                "CD/PCD, pass `kernel=None` to the estimator: it runs the site's own sampler."
            )
        return super().kernel(params)

    def init_visible(self, rng_key, params, num_chains: int):
        """``(num_chains, V)`` draws of the visible layer with no weights (a start for chains)."""
        num_chains = check_int("num_chains", num_chains, 1)
        return self.path_sample_base(rng_key, params, params["a"], num_chains)

    def sample(self, rng_key, params, num_chains: int, num_steps: int, num_samples: int = 0,
               thin: int = 1, init_positions=None) -> ChainResult:
        """``num_chains`` block Gibbs chains of ``num_steps`` sweeps (:func:`numpyro_ebm.sample_chains`),
        started from :meth:`init_visible` unless ``init_positions`` ``(num_chains, V)`` is given;
        ``positions`` ``(num_chains, V)``, ``state.hidden`` the last hidden draws."""
        self.check_params(params)
        init_key, run_key = jax.random.split(rng_key)
        if init_positions is None:
            init_positions = self.init_visible(init_key, params, num_chains)
        return super().sample(run_key, params, num_chains, num_steps, num_samples, thin,
                              init_positions)

    # -- partition function and likelihood ------------------------------------------------------

    def log_partition(self, params, chunk_size: int = 16_384) -> jax.Array:
        """Exact :math:`\\log Z = \\operatorname{logsumexp}_h \\log\\sum_v e^{-E(v,h)}` by
        enumerating the hidden layer (at most 24 units, ``chunk_size`` configurations at a time);
        jittable and differentiable in ``params``."""
        self.check_params(params)
        return logsumexp_binary_layer(lambda h: self.log_marginal_hidden(params, h),
                                      self.num_hidden, chunk_size, repr(self))

    def log_likelihood(self, params, v, log_Z=None):
        """:math:`\\log p(v) = -F(v) - \\log Z`, per example (exact :math:`\\log Z` unless given,
        e.g. an AIS estimate for large layers)."""
        if log_Z is None:
            log_Z = self.log_partition(params)
        return -self.free_energy(params, v) - log_Z

    def logz_ais(self, rng_key, params, *, data=None, base_visible_bias=None,
                 **kwargs) -> AISResult:
        r""":math:`\log Z` by AIS along :meth:`annealing_path` (Salakhutdinov & Murray 2008).

        :param data: optional training data ``(N, V)``: the base is then fitted to it (a base
            closer to the target, the S&M choice) unless ``base_visible_bias`` is given.
        :param base_visible_bias: :math:`a_0` directly.
        :param kwargs: as :func:`numpyro_ebm.logz_ais` (``num_chains``, ``num_temperatures``,
            ``betas``, ``num_steps``, ``schedule``; S&M use a linear schedule).
        :return: :class:`~numpyro_ebm.AISResult` (``positions`` are the final ``v``).
        """
        if base_visible_bias is None:
            base_visible_bias = self.default_base_visible_bias(params, data)
        return logz_ais(rng_key, self.annealing_path(params, base_visible_bias), **kwargs)


class RBM(RBMBase):
    r"""A Bernoulli-Bernoulli RBM, :math:`v \in \{0,1\}^V`:
    :math:`E(v, h) = -a^\top v - b^\top h - v^\top W h` (module docstring).

    :param int num_visible: ``V``.
    :param int num_hidden: ``H``.
    :param float init_scale: standard deviation of the initial weights (Hinton's guide: 0.01).
    :param str name: prefix of the parameter sites; the observed site is ``site`` (default
        ``f"{name}_v"``).

    **Example** (CD-1 through SVI)

    .. code-block:: python

        rbm = RBM(64, 16)
        svi = SVI(rbm.model, no_guide, optax.sgd(0.1), loss=ContrastiveDivergence(None, 1))
        result = svi.run(jax.random.key(0), 5000, data, subsample_size=20)
        params = rbm.get_params(result.params)
        rbm.log_likelihood(params, test).mean()              # exact, nats per image
        rbm.sample(jax.random.key(1), params, num_chains=64, num_steps=1000).positions
    """

    support = constraints.boolean

    def visible_features(self, params, v):
        return v

    def visible_energy(self, params, v):
        return -(v @ params["a"])

    def visible_probabilities(self, params, h):
        """:math:`p(v_i = 1 \\mid h) = \\sigma(a_i + (W h)_i)`: ``(..., H) -> (..., V)``."""
        return jax.nn.sigmoid(self._as_float(params, h) @ params["W"].T + params["a"])

    def log_marginal_hidden(self, params, h):
        return h @ params["b"] + jnp.sum(jax.nn.softplus(h @ params["W"].T + params["a"]), -1)

    def path_visible_logdensity(self, params, a0, beta, v):
        return v @ ((1.0 - beta) * a0 + beta * params["a"])

    def path_sample_visible(self, rng_key, params, a0, beta, h):
        u = jax.random.uniform(rng_key, jnp.shape(h)[:-1] + (self.num_visible,),
                               jnp.result_type(params["W"]))
        return self.path_visible_from_uniform(u, params, a0, beta, h)

    def path_visible_from_uniform(self, u, params, a0, beta, h):
        """:meth:`path_sample_visible` on given uniforms ``u`` ``(..., V)``: ``u < p(v = 1 | h)``."""
        h = self._as_float(params, h)
        logits = (1.0 - beta) * a0 + beta * (h @ params["W"].T + params["a"])
        return (u < jax.nn.sigmoid(logits)).astype(h.dtype)

    def path_sample_base(self, rng_key, params, a0, num_chains):
        p = jax.nn.sigmoid(a0)
        return jax.random.bernoulli(rng_key, p, (num_chains, self.num_visible)).astype(p.dtype)

    def path_log_Z_visible(self, params, a0):
        return jnp.sum(jax.nn.softplus(a0))

    def default_base_visible_bias(self, params, data=None):
        """The logit of the data's visible means (clipped), or 0 (a uniform base)."""
        return data_visible_bias(data, self.num_visible)

    def initial_visible_bias(self, data=None):
        return data_visible_bias(data, self.num_visible)

    def log_partition(self, params, chunk_size: int = 16_384) -> jax.Array:
        """Exact :math:`\\log Z`, enumerating the smaller layer (at most 24 units): the hidden
        layer, :math:`\\operatorname{logsumexp}_h [b^\\top h + \\sum_i \\operatorname{softplus}(a_i
        + (Wh)_i)]`, or the visible one, :math:`\\operatorname{logsumexp}_v [-F(v)]`."""
        if self.num_hidden <= self.num_visible:
            return super().log_partition(params, chunk_size)
        self.check_params(params)
        return logsumexp_binary_layer(lambda v: -self.free_energy(params, v), self.num_visible,
                                      chunk_size, repr(self))


class GaussianBernoulliRBM(RBMBase):
    r"""A Gaussian-Bernoulli RBM: real visible units :math:`v \in \mathbb R^V`, binary hidden.

    .. math::

        E(v, h) = \sum_i \frac{(v_i - a_i)^2}{2\sigma_i^2} - b^\top h
                  - \sum_{ij} \frac{v_i}{\sigma_i} W_{ij} h_j,\qquad
        p(v \mid h) = \mathcal N(a + \sigma \odot W h, \operatorname{diag}\sigma^2),

    and the exact partition function, the Gaussian integral in closed form (:math:`c = W h`):

    .. math::

        \log Z = \sum_i \log(\sqrt{2\pi}\sigma_i) + \operatorname{logsumexp}_h
            \Big[b^\top h + \sum_i \Big(\frac{a_i c_i}{\sigma_i} + \frac{c_i^2}{2}\Big)\Big].

    Parameters ``{"W", "a", "b", "log_sigma"}``; ``log_sigma`` is fixed at ``log(sigma)`` (default
    0: standardize the data) unless ``learn_sigma=True``. Its annealing path starts from the
    Gaussian :math:`\mathcal N(a_0, \sigma^2)` (default :math:`a_0 = a`, or the data mean).
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

    def init_params(self, rng_key=None, data=None) -> dict:
        """``W ~ N(0, init_scale^2)``, ``b = 0``, ``a`` the data mean (or 0), ``log_sigma``."""
        return {**super().init_params(rng_key, data), "log_sigma": self._log_sigma0()}

    def get_params(self, svi_params: dict) -> dict:
        """``{"W", "a", "b", "log_sigma"}``; ``log_sigma`` is the fixed value unless learned."""
        fixed = {} if self.learn_sigma else {f"{self.name}_log_sigma": self._log_sigma0()}
        return super().get_params({**fixed, **svi_params})

    def _register_params(self, data) -> dict:
        params = super()._register_params(data)
        if self.learn_sigma:
            params["log_sigma"] = numpyro.param(f"{self.name}_log_sigma", self._log_sigma0())
        else:
            params["log_sigma"] = self._log_sigma0()
        return params

    def initial_visible_bias(self, data=None):
        if data is None:
            return jnp.zeros((self.num_visible,))
        return jnp.mean(jnp.asarray(data, jnp.float32).reshape(-1, self.num_visible), 0)

    def default_base_visible_bias(self, params, data=None):
        """The base mean: the data mean when ``data`` is given, else ``a``."""
        return params["a"] if data is None else self.initial_visible_bias(data)

    def visible_features(self, params, v):
        return v / jnp.exp(params["log_sigma"])

    def visible_energy(self, params, v):
        return jnp.sum((v - params["a"]) ** 2 / (2 * jnp.exp(2 * params["log_sigma"])), -1)

    def visible_mean(self, params, h):
        """:math:`\\mathbb E[v \\mid h] = a + \\sigma \\odot W h`."""
        return params["a"] + jnp.exp(params["log_sigma"]) * (self._as_float(params, h)
                                                              @ params["W"].T)

    def log_marginal_hidden(self, params, h):
        c = h @ params["W"].T
        sigma = jnp.exp(params["log_sigma"])
        gauss = jnp.sum(params["log_sigma"]) + 0.5 * self.num_visible * math.log(2 * math.pi)
        return h @ params["b"] + jnp.sum(params["a"] * c / sigma + 0.5 * c**2, -1) + gauss

    def path_visible_logdensity(self, params, a0, beta, v):
        m = (1.0 - beta) * a0 + beta * params["a"]
        return -jnp.sum((v - m) ** 2 / (2 * jnp.exp(2 * params["log_sigma"])), -1)

    def path_sample_visible(self, rng_key, params, a0, beta, h):
        sigma = jnp.exp(params["log_sigma"])
        mean = (1.0 - beta) * a0 + beta * params["a"] + beta * sigma * (
            self._as_float(params, h) @ params["W"].T)
        return mean + sigma * jax.random.normal(rng_key, mean.shape, mean.dtype)

    def path_sample_base(self, rng_key, params, a0, num_chains):
        noise = jax.random.normal(rng_key, (num_chains, self.num_visible), a0.dtype)
        return a0 + jnp.exp(params["log_sigma"]) * noise

    def path_log_Z_visible(self, params, a0):
        return jnp.sum(params["log_sigma"]) + 0.5 * self.num_visible * math.log(2 * math.pi)
