r"""Posteriors over the parameters of an energy-based likelihood: the exchange algorithm.

A model whose observed site is an :class:`~numpyro_ebm.Unnormalized` likelihood with latent
parameters :math:`\theta`,

.. math::

    p(\theta \mid y) \propto p(\theta)\, \frac{f_\theta(y)}{Z(\theta)},
    \qquad f_\theta(y) = e^{-E_\theta(y)},

is *doubly intractable*: :math:`Z(\theta)` depends on :math:`\theta` and is unknown, so NUTS on
the model (whose site ``log_prob`` is :math:`-E_\theta`) samples the wrong posterior. The
exchange algorithm (Murray, Ghahramani and MacKay, 2006) proposes :math:`\theta' \sim q(\cdot
\mid \theta)`, draws auxiliary data :math:`w \sim p(\cdot \mid \theta')` (same shape as
:math:`y`: one draw per observed example) and accepts with probability

.. math::

    \log a = \log p(\theta') - \log p(\theta) + [-E_{\theta'}(y) + E_\theta(y)]
    + [-E_\theta(w) + E_{\theta'}(w)] + \log\frac{q(\theta \mid \theta')}{q(\theta' \mid \theta)},

in which every :math:`Z` cancels. With an **exact** draw of :math:`w` the chain leaves the exact
posterior invariant. With :math:`w` from a finite MCMC run (``num_aux_steps`` transitions of the
site's own sampler) it is the **approximate exchange algorithm** (Caimo and Friel, 2011): the
bias vanishes as the auxiliary chain mixes.

Here :math:`\log p(\theta)` and :math:`E_\theta(y)` come from NumPyro's potential energy of the
model (:func:`numpyro.infer.util.potential_energy`, in the unconstrained space with the
Jacobian), and :math:`E_\theta(w)` from the likelihood site's distribution in a trace of the
model at :math:`\theta` (plates, masks and scales as NumPyro applies them).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import random
from jax.flatten_util import ravel_pytree
from numpyro.handlers import seed, substitute, trace
from numpyro.infer.initialization import init_to_uniform
from numpyro.infer.mcmc import MCMCKernel
from numpyro.infer.util import ParamInfo, constrain_fn, initialize_model, potential_energy
from numpyro.util import identity, is_prng_key

from numpyro_ebm.distribution import Unnormalized
from numpyro_ebm.energy import unwrap_distribution
from numpyro_ebm.sampling.ebm_gibbs import site_values

__all__ = ["ExchangeKernel", "ExchangeState", "enumeration_sampler"]

MAX_ENUMERATION_STATES = 2**20
"""Largest number of configurations of one event that ``aux_sampler="enumerate"`` lists."""


class ExchangeState(NamedTuple):
    """State of :class:`ExchangeKernel`.

    :ivar z: ``{site: value}``, the latent sites in the unconstrained space.
    :ivar potential_energy: NumPyro's potential energy at ``z`` (the unnormalized likelihood:
        :math:`-\\log p(\\theta) + E_\\theta(y)`, Jacobian included).
    :ivar accept_prob: acceptance probability of the last proposal.
    :ivar mean_accept_prob: running mean of ``accept_prob`` (restarted after warmup).
    :ivar step_size: scale of the random-walk proposal (adapted during warmup).
    :ivar i: iteration number.
    :ivar rng_key: the chain's key.
    """

    z: dict
    potential_energy: Any
    accept_prob: Any
    mean_accept_prob: Any
    step_size: Any
    i: Any
    rng_key: Any


def enumeration_sampler(ebm: Unnormalized, rng_key, num_draws: int):
    r"""Exact draws of a small discrete EBM by enumeration: every configuration of the event
    (:math:`K^n` of them, ``K`` values per coordinate, at most ``MAX_ENUMERATION_STATES``) is
    scored by :math:`-E` and ``num_draws`` configurations are drawn from the softmax.

    :param ebm: an :class:`~numpyro_ebm.Unnormalized` with a finite discrete support (spins,
        bits, categories).
    :return: ``(num_draws, *event_shape)``.
    """
    ebm = unwrap_distribution(ebm)
    values = site_values(ebm.support)
    if values is None:
        raise ValueError(
            f"enumeration_sampler: cannot list the values of the support {ebm.support}; it needs "
            "spins, bits or categories."
        )
    n = int(np.prod(ebm.event_shape))
    if len(values) ** n > MAX_ENUMERATION_STATES:
        raise ValueError(
            f"enumeration_sampler: {len(values)}**{n} configurations is too many to enumerate "
            f"(at most {MAX_ENUMERATION_STATES}); use the default MCMC auxiliary sampler."
        )
    configs = np.asarray(list(itertools.product(values, repeat=n)), np.float32)
    configs = jnp.asarray(configs.reshape((-1, *ebm.event_shape)))
    base = Unnormalized(ebm.energy_fn, ebm.event_shape, ebm.support)
    logits = -base.energy(configs)
    idx = random.categorical(rng_key, logits, shape=(num_draws,))
    return configs[idx]


def _site_log_prob(site, value):
    """The site's summed log density at ``value`` as NumPyro's ``log_density`` computes it."""
    log_prob = site["fn"].log_prob(value)
    if site.get("scale") is not None:
        log_prob = site["scale"] * log_prob
    return jnp.sum(log_prob)


class ExchangeKernel(MCMCKernel):
    r"""The exchange algorithm for the latent parameters of an energy-based likelihood, a
    ``numpyro.infer.mcmc.MCMCKernel`` (module docstring for the acceptance ratio).

    :param model: a NumPyro model with one observed :class:`~numpyro_ebm.Unnormalized` site whose
        energy depends on the latent sites (e.g. ``numpyro.sample("s", ising.distribution({"J":
        J, "h": 0.0}), obs=spins)`` in a plate); its other sites may be anything with a known
        ``log_prob``.
    :param str site: the name of that site (default: the only observed ``Unnormalized`` site).
    :param aux_sampler: how the auxiliary data :math:`w \sim p(\cdot \mid \theta')` are drawn:

        * ``"mcmc"`` (default; the *approximate* exchange algorithm): ``num_aux_steps``
          transitions of the site distribution's own sampler (``annealing_path.kernel(1.0)``, set
          by ``model.distribution(params)`` of the classical models), one chain per observed
          example, started at the observed example (``aux_init="data"``) or at a draw of the
          path's base (``aux_init="base"``);
        * ``"enumerate"`` (exact): :func:`enumeration_sampler`, for small discrete events
          (a 4x4 Ising lattice: 65536 configurations);
        * a callable ``(rng_key, params, y) -> w`` (exact when it is, e.g. perfect draws of an
          Ising lattice by :func:`~numpyro_ebm.sampling.cftp.ising_cftp`): ``params`` the latent
          sites' constrained values at :math:`\theta'`, ``y`` the observed value, ``w`` of
          ``y``'s shape.
    :param int num_aux_steps: MCMC transitions per auxiliary draw (``"mcmc"`` only).
    :param str aux_init: ``"data"`` or ``"base"`` (``"mcmc"`` only).
    :param float step_size: initial scale of the Gaussian random walk on the unconstrained latent
        vector; adapted during warmup towards ``target_accept_prob`` unless ``adapt_step_size``
        is False.
    :param proposal: optional ``(rng_key, z) -> (z_new, log_q_ratio)`` on the dict of
        unconstrained latent values, ``log_q_ratio`` :math:`= \log q(z \mid z') - \log q(z'
        \mid z)` (0 for a symmetric proposal); replaces the random walk (no adaptation).
    :param init_strategy: NumPyro init strategy of the latent sites (``init_params`` given to
        ``MCMC.run`` are unconstrained values, as for HMC).

    **Example**

    .. code-block:: python

        ising = Ising((4, 4))
        def model(spins):
            J = numpyro.sample("J", dist.Normal(0.0, 1.0))
            with numpyro.plate("data", spins.shape[0]):
                numpyro.sample("s", ising.distribution({"J": J, "h": 0.0}), obs=spins)

        mcmc = MCMC(ExchangeKernel(model, num_aux_steps=50), num_warmup=500, num_samples=2000)
        mcmc.run(jax.random.key(0), spins)
        mcmc.print_summary()
    """

    sample_field = "z"

    def __init__(
        self,
        model,
        *,
        site: str | None = None,
        aux_sampler: str | Callable = "mcmc",
        num_aux_steps: int = 100,
        aux_init: str = "data",
        step_size: float = 0.1,
        adapt_step_size: bool = True,
        target_accept_prob: float = 0.3,
        proposal: Callable | None = None,
        init_strategy=init_to_uniform,
    ):
        if not callable(model):
            raise TypeError(f"ExchangeKernel: `model` must be a NumPyro model, got {model!r}.")
        if site is not None and not isinstance(site, str):
            raise TypeError(f"ExchangeKernel: `site` must be a site name (str), got {site!r}.")
        if not (callable(aux_sampler) or aux_sampler in ("mcmc", "enumerate")):
            raise ValueError(
                "ExchangeKernel: `aux_sampler` must be 'mcmc', 'enumerate' or a callable "
                f"(rng_key, params, y) -> w; got {aux_sampler!r}."
            )
        if not isinstance(num_aux_steps, (int, np.integer)) or num_aux_steps < 1:
            raise ValueError(
                f"ExchangeKernel: `num_aux_steps` must be an int >= 1, got {num_aux_steps!r}."
            )
        if aux_init not in ("data", "base"):
            raise ValueError(f"ExchangeKernel: `aux_init` must be 'data' or 'base', got {aux_init!r}.")
        if not np.isfinite(step_size) or step_size <= 0:
            raise ValueError(f"ExchangeKernel: `step_size` must be > 0, got {step_size!r}.")
        if not 0 < target_accept_prob < 1:
            raise ValueError(
                "ExchangeKernel: `target_accept_prob` must be in (0, 1), got "
                f"{target_accept_prob!r}."
            )
        if proposal is not None and not callable(proposal):
            raise TypeError(
                "ExchangeKernel: `proposal` must be a callable (rng_key, z) -> (z_new, "
                f"log_q_ratio), got {proposal!r}."
            )
        self._model = model
        self._site = site
        self._aux_sampler = aux_sampler
        self._num_aux_steps = int(num_aux_steps)
        self._aux_init = aux_init
        self._step_size = float(step_size)
        self._adapt = bool(adapt_step_size) and proposal is None
        self._target = float(target_accept_prob)
        self._proposal = proposal
        self._init_strategy = init_strategy
        self._postprocess_fn = None
        self._num_warmup = 0

    # -- MCMCKernel protocol ---------------------------------------------------------------------

    @property
    def model(self):
        return self._model

    @property
    def default_fields(self):
        return ("z",)

    def get_diagnostics_str(self, state):
        return (f"acc. prob={float(jnp.mean(state.mean_accept_prob)):.2f}, "
                f"step size={float(jnp.mean(state.step_size)):.2e}")

    def postprocess_fn(self, model_args, model_kwargs):
        if self._postprocess_fn is None:
            return identity
        return self._postprocess_fn(*model_args, **model_kwargs)

    def _find_site(self, model_args, model_kwargs):
        tr = trace(seed(self._model, random.key(0))).get_trace(*model_args, **model_kwargs)
        observed = [
            name for name, s in tr.items()
            if s["type"] == "sample" and s["is_observed"]
            and isinstance(unwrap_distribution(s["fn"]), Unnormalized)
        ]
        if self._site is None:
            if len(observed) != 1:
                raise ValueError(
                    "ExchangeKernel: the model must have exactly one observed Unnormalized site "
                    f"(the energy-based likelihood); found {observed}. Name it with `site=`."
                    if observed else
                    "ExchangeKernel: the model has no observed Unnormalized site (an energy-based "
                    "likelihood with an unknown normalizer); use NUTS for an ordinary likelihood."
                )
            name = observed[0]
        else:
            name = self._site
            if name not in observed:
                raise ValueError(
                    f"ExchangeKernel: `site`={name!r} is not an observed Unnormalized site of the "
                    f"model; those are {observed}."
                )
        ebm = unwrap_distribution(tr[name]["fn"])
        if self._aux_sampler == "mcmc" and ebm.annealing_path is None:
            raise ValueError(
                f"ExchangeKernel: the likelihood site {name!r} has no sampler for the auxiliary "
                "data (its Unnormalized carries no `annealing_path`). Give it one (classical "
                "models: `model.distribution(params)`; any energy: `Unnormalized(..., "
                "annealing_path=numpyro_ebm.geometric_path(...))`), or pass an exact sampler "
                "`aux_sampler=lambda rng_key, params, y: ...` (or 'enumerate' for a small "
                "discrete event)."
            )
        if self._aux_sampler == "enumerate":
            if site_values(ebm.support) is None:
                raise ValueError(
                    f"ExchangeKernel: aux_sampler='enumerate' needs a finite discrete support; "
                    f"site {name!r} has {ebm.support}."
                )
        return name

    def init(self, rng_key, num_warmup, init_params, model_args, model_kwargs):
        model_kwargs = {} if model_kwargs is None else dict(model_kwargs)
        self._site = self._find_site(model_args, model_kwargs)
        self._num_warmup = int(num_warmup)
        vectorized = not is_prng_key(rng_key)
        key_model = rng_key[0] if vectorized else rng_key
        key_model, _ = random.split(key_model)
        info, _, postprocess_fn, _ = initialize_model(
            key_model, self._model, init_strategy=self._init_strategy, dynamic_args=True,
            model_args=model_args, model_kwargs=model_kwargs, validate_grad=False,
        )
        self._postprocess_fn = postprocess_fn
        if isinstance(init_params, ParamInfo):
            init_params = init_params.z
        z0 = info.z if not init_params else init_params

        def init_one(key):
            pe = potential_energy(self._model, model_args, model_kwargs, z0)
            dtype = jnp.result_type(float)
            return ExchangeState(z0, jnp.asarray(pe, dtype), jnp.zeros((), dtype),
                                 jnp.zeros((), dtype), jnp.asarray(self._step_size, dtype),
                                 jnp.zeros((), jnp.int32), key)

        if vectorized:
            return jax.vmap(init_one)(rng_key)
        return init_one(rng_key)

    # -- the exchange step -----------------------------------------------------------------------

    def _site_at(self, z, model_args, model_kwargs):
        """(site dict of the likelihood at z (unconstrained), constrained latent values)."""
        params = constrain_fn(self._model, model_args, model_kwargs, z)
        tr = trace(substitute(seed(self._model, random.key(0)), data=params)).get_trace(
            *model_args, **model_kwargs)
        return tr[self._site], params

    def _draw_aux(self, rng_key, site, params):
        y = jnp.asarray(site["value"])
        ebm = unwrap_distribution(site["fn"])
        event_shape = tuple(ebm.event_shape)
        batch = y.shape[: y.ndim - len(event_shape)]
        n = int(np.prod(batch)) if batch else 1
        if callable(self._aux_sampler):
            w = jnp.asarray(self._aux_sampler(rng_key, params, y))
            if w.shape != y.shape:
                raise ValueError(
                    f"ExchangeKernel: `aux_sampler` returned shape {w.shape}; expected the shape "
                    f"{y.shape} of the observed site {self._site!r}."
                )
            return w
        if self._aux_sampler == "enumerate":
            return enumeration_sampler(ebm, rng_key, n).reshape(y.shape).astype(y.dtype)
        path = ebm.annealing_path
        algorithm = path.kernel(1.0)
        key_init, key_base, key_run = random.split(rng_key, 3)
        if self._aux_init == "data":
            start = y.reshape((n, *event_shape))
        else:
            start = jnp.asarray(path.sample_base(key_base, n)).reshape((n, *event_shape))
        state = jax.vmap(algorithm.init)(start, random.split(key_init, n))

        def one_step(state, key):
            state, _ = jax.vmap(algorithm.step)(random.split(key, n), state)
            return state, None

        state, _ = jax.lax.scan(one_step, state, random.split(key_run, self._num_aux_steps))
        return jnp.reshape(state.position, y.shape).astype(y.dtype)

    def _propose(self, rng_key, z, step_size):
        if self._proposal is not None:
            z_new, log_q_ratio = self._proposal(rng_key, z)
            return z_new, jnp.asarray(log_q_ratio)
        flat, unravel = ravel_pytree(z)
        eps = random.normal(rng_key, flat.shape, flat.dtype)
        return unravel(flat + step_size * eps), jnp.zeros((), flat.dtype)

    def sample(self, state, model_args, model_kwargs):
        model_kwargs = {} if model_kwargs is None else model_kwargs
        if jnp.ndim(state.i) > 0:  # vectorized chains
            return jax.vmap(lambda s: self.sample(s, model_args, model_kwargs))(state)
        rng_key, key_prop, key_aux, key_acc = random.split(state.rng_key, 4)
        z_new, log_q_ratio = self._propose(key_prop, state.z, state.step_size)
        pe_new = potential_energy(self._model, model_args, model_kwargs, z_new)
        site_new, params_new = self._site_at(z_new, model_args, model_kwargs)
        site_old, _ = self._site_at(state.z, model_args, model_kwargs)
        w = self._draw_aux(key_aux, site_new, params_new)
        # log f_theta(w) - log f_theta'(w) = -E_theta(w) + E_theta'(w)
        log_aux = _site_log_prob(site_old, w) - _site_log_prob(site_new, w)
        log_a = state.potential_energy - pe_new + log_aux + log_q_ratio
        log_a = jnp.where(jnp.isnan(log_a), -jnp.inf, log_a)
        accept_prob = jnp.exp(jnp.minimum(log_a, 0.0))
        accept = random.uniform(key_acc) < accept_prob
        z = jax.tree.map(lambda a, b: jnp.where(accept, a, b), z_new, state.z)
        pe = jnp.where(accept, pe_new, state.potential_energy)

        i = state.i + 1
        warmup = i <= self._num_warmup
        step_size = state.step_size
        if self._adapt:
            rate = jnp.power(i.astype(step_size.dtype), -0.6)
            adapted = step_size * jnp.exp(rate * (accept_prob - self._target))
            step_size = jnp.where(warmup, adapted, step_size)
        # running mean of the acceptance, restarted when sampling begins
        n = jnp.where(warmup, i, i - self._num_warmup).astype(accept_prob.dtype)
        mean = state.mean_accept_prob + (accept_prob - state.mean_accept_prob) / n
        return ExchangeState(z, pe, accept_prob, mean, step_size, i, rng_key)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_postprocess_fn"] = None
        return state
