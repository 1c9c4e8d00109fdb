# Over ~400 lines on purpose: one class, BlackJAXKernel, implementing NumPyro's MCMCKernel protocol
# (init, sample, postprocess, diagnostics, extra fields) and its two warmup adaptations; the
# length is mostly the docstrings of that one public object.
r"""Any BlackJAX sampling algorithm as a NumPyro :class:`~numpyro.infer.mcmc.MCMCKernel`.

:class:`BlackJAXKernel` lets ``numpyro.infer.MCMC`` drive a BlackJAX algorithm (``blackjax.mala``,
``blackjax.hmc``, ``blackjax.nuts``, ``blackjax.rmh``, :func:`numpyro_ebm.ula`, ...), so that the
whole NumPyro toolbox works with it: every ``chain_method``, the progress bar, ``print_summary``,
``get_samples(group_by_chain=True)``, ``get_extra_fields``, ``Predictive``, and models with
constrained latent sites or :class:`~numpyro_ebm.Unnormalized` (energy-based) latent sites.

Like NumPyro's own HMC, the chain lives in the *unconstrained* space: for a model,
:func:`numpyro.infer.util.initialize_model` gives the potential energy
:math:`U(z) = -\log p(T(z), \text{data}) - \log|\det J_T(z)|` of the unconstrained latent
values :math:`z` (:math:`T` maps them onto each site's support) and the ``postprocess_fn`` that maps
samples back to constrained site values (plus deterministic sites). BlackJAX wants a log density;
the conversion :math:`\log \pi(z) = -U(z)` happens in one place, :func:`logdensity_from_potential`.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import random
from numpyro.infer.initialization import init_to_uniform
from numpyro.infer.mcmc import MCMCKernel
from numpyro.infer.util import ParamInfo, initialize_model
from numpyro.util import identity, is_prng_key

from numpyro_ebm._validation import check_finite, check_int
from numpyro_ebm.sampling.chains import build_algorithm

__all__ = [
    "BlackJAXKernel",
    "BlackJAXKernelState",
    "check_continuous_latents",
    "logdensity_from_potential",
]

#: Options of ``adapt=dict(...)``.
ADAPT_OPTIONS = (
    "num_steps",
    "target_acceptance_rate",
    "initial_step_size",
    "is_mass_matrix_diagonal",
)
#: Default target acceptance rates: Stan's 0.8 for the HMC family (window adaptation), the optimal
#: 0.574 of Roberts & Rosenthal (1998) for step-size-only adaptation (MALA-like kernels).
_TARGET_WINDOW, _TARGET_STEP_SIZE_ONLY = 0.8, 0.574


class BlackJAXKernelState(NamedTuple):
    """The state :class:`BlackJAXKernel` carries through ``MCMC`` (a pytree).

    :ivar i: iteration counter, ``()`` int32 (``(num_chains,)`` with ``chain_method="vectorized"``).
    :ivar sampler_state: the BlackJAX state; its ``position`` is the unconstrained sample ``z``.
    :ivar info: the BlackJAX info of the last transition (zeros before the first one), e.g.
        ``MALAInfo(acceptance_rate, is_accepted)``; collect it with
        ``extra_fields=("info.acceptance_rate",)``.
    :ivar parameters: the adapted ``{"step_size": ..., "inverse_mass_matrix": ...}`` passed to
        the algorithm (``{}`` without adaptation).
    :ivar mean_accept_prob: running mean of ``info.acceptance_rate`` (over warmup, then restarted
        over sampling; NaN for kernels that report none).
    :ivar rng_key: the chain's PRNG key.

    Read-only views, usable as ``extra_fields``: ``z`` (the sample field), ``potential_energy``
    (:math:`U(z) = -\\log\\pi(z)`), ``accept_prob`` (``info.acceptance_rate``) and ``diverging``
    (``info.is_divergent``, ``False`` for kernels without divergences).
    """

    i: Any
    sampler_state: Any
    info: Any
    parameters: dict
    mean_accept_prob: Any
    rng_key: Any

    @property
    def z(self):
        """The unconstrained position (``sampler_state.position``)."""
        return self.sampler_state.position

    @property
    def potential_energy(self):
        """:math:`U(z) = -\\log\\pi(z)`, from the BlackJAX state's ``logdensity``."""
        logdensity = getattr(self.sampler_state, "logdensity", None)
        if logdensity is None:
            raise AttributeError(
                f"{type(self.sampler_state).__name__} has no `logdensity`, so `potential_energy` "
                "is not available for this BlackJAX algorithm."
            )
        return -logdensity

    @property
    def accept_prob(self):
        """The acceptance probability of the last transition (``info.acceptance_rate``)."""
        return _acceptance_rate(self.info, self.i)

    @property
    def diverging(self):
        """Whether the last transition diverged (``info.is_divergent``; ``False`` if absent)."""
        divergent = getattr(self.info, "is_divergent", None)
        return jnp.zeros_like(self.i, dtype=bool) if divergent is None else divergent


def check_continuous_latents(
    model, model_args=(), model_kwargs=None, init_strategy=init_to_uniform
) -> None:
    """Raise ``ValueError`` naming the latent sample sites of ``model`` with a discrete support.

    :class:`BlackJAXKernel` samples continuous latent sites only (gradient-based kernels in an
    unconstrained space); NumPyro would otherwise ask to install ``funsor`` to enumerate them.
    The model is traced once with ``init_strategy`` as ``initialize_model`` does (continuous
    sites take their initial values; nothing else is sampled).
    """
    from numpyro import handlers

    seeded = handlers.substitute(handlers.seed(model, rng_seed=0), substitute_fn=init_strategy)
    with handlers.block():
        tr = handlers.trace(seeded).get_trace(*model_args, **(model_kwargs or {}))
    discrete = [
        name
        for name, site in tr.items()
        if site["type"] == "sample"
        and not site["is_observed"]
        and getattr(getattr(site["fn"], "support", None), "is_discrete", False)
    ]
    if discrete:
        raise ValueError(
            f"BlackJAXKernel: the model's latent site(s) {discrete} are discrete; BlackJAXKernel "
            "samples continuous latent sites only. Sample the discrete ones by exact Gibbs with "
            "`numpyro_ebm.EBMGibbs(BlackJAXKernel(...))` (the continuous sites keep this "
            "kernel), observe them, or marginalize them out in the model."
        )


def logdensity_from_potential(potential_fn: Callable) -> Callable:
    r"""NumPyro's potential energy :math:`U(z)` as BlackJAX's log density :math:`-U(z)`.

    The only place where :class:`BlackJAXKernel` converts between the two conventions.
    """

    def logdensity_fn(z):
        return -potential_fn(z)

    return logdensity_fn


def _acceptance_rate(info, like):
    rate = getattr(info, "acceptance_rate", None)
    if rate is None:
        return jnp.full(jnp.shape(like), jnp.nan, jnp.float32)
    return jnp.asarray(rate, jnp.float32)


def _split_factory(kernel, algorithm_kwargs):
    """``(base, fixed_kwargs)``: unwrap ``functools.partial`` layers (keyword arguments only)."""
    base, fixed = kernel, {}
    while isinstance(base, functools.partial) and not base.args:
        fixed = {**base.keywords, **fixed}
        base = base.func
    if base is kernel:
        return kernel, dict(algorithm_kwargs)
    return base, {**fixed, **algorithm_kwargs}


def _parameters_of(base) -> inspect.Signature | None:
    """The signature of a BlackJAX top-level API (``blackjax.mala`` -> ``mala.as_top_level_api``)."""
    fn = getattr(base, "differentiable", base)
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def _check_algorithm_kwargs(base, kwargs):
    """Fail at construction, naming the argument, on keywords the algorithm does not take."""
    sig = _parameters_of(base)
    if sig is None or not kwargs:
        return
    params = sig.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise TypeError(
            f"BlackJAXKernel: unknown option(s) {unknown} for {getattr(base, '__name__', base)!r}; "
            f"the algorithm accepts {[p for p in params if p != 'logdensity_fn']}, and "
            f"BlackJAXKernel itself accepts `model`, `potential_fn`, `adapt`, `init_strategy`."
        )


def _dummy_logdensity(x):
    return -0.5 * jnp.sum(jnp.square(x))


class BlackJAXKernel(MCMCKernel):
    r"""Run any BlackJAX sampling algorithm inside :class:`numpyro.infer.MCMC`.

    The chain moves in NumPyro's unconstrained space, exactly like NumPyro's ``HMC``: the target
    is :math:`\pi(z) \propto \exp(-U(z))` with :math:`U` the potential energy of the model (or the
    ``potential_fn`` given), and ``MCMC.get_samples()`` returns the constrained site values
    (``postprocess_fn``). ``Unnormalized`` latent sites need no sampler: they are initialized by
    ``init_strategy`` (default :func:`~numpyro.infer.initialization.init_to_uniform`, which draws
    uniformly in :math:`(-2, 2)` in the unconstrained space).

    :param kernel: a factory ``logdensity_fn -> blackjax.SamplingAlgorithm`` (the convention of
        :func:`numpyro_ebm.sample_chains`): a BlackJAX algorithm such as ``blackjax.mala`` with its
        parameters as ``algorithm_kwargs``, or a ``functools.partial`` of it, e.g.
        ``functools.partial(blackjax.mala, step_size=0.1)``.
    :param model: a NumPyro model. Exactly one of ``model`` and ``potential_fn`` is required.
    :param potential_fn: :math:`U(z)` (an energy, i.e. *minus* a log density) of a pytree ``z``;
        then pass ``init_params`` (leading axis ``num_chains`` when ``num_chains > 1``) to
        ``MCMC.run``, and samples are the raw ``z``.
    :param adapt: ``False`` (default), ``True``, or a dict of options for warmup adaptation:
        ``num_steps`` (default: ``MCMC``'s ``num_warmup``), ``target_acceptance_rate`` (default 0.8
        with a mass matrix, 0.574 for step size only), ``initial_step_size`` (default: the
        ``step_size`` given, else 1.0) and ``is_mass_matrix_diagonal`` (default ``True``). Then
        ``kernel`` must be the BlackJAX algorithm itself (``blackjax.nuts``, ``blackjax.hmc``,
        ``blackjax.mala``; optionally partial'ed with its fixed options, e.g.
        ``num_integration_steps``). Algorithms that take ``(step_size, inverse_mass_matrix)``
        get BlackJAX's Stan-style ``blackjax.window_adaptation``; algorithms that take only
        ``step_size`` (MALA) get dual averaging of the step size. See *Adaptation* below.
    :param init_strategy: per-site initialization (see NumPyro's ``init_to_*``), model only.
    :param algorithm_kwargs: keyword arguments passed to ``kernel`` with ``logdensity_fn``.

    **Adaptation.** NumPyro's convention holds: warmup = adaptation + burn-in, so a run costs
    ``num_warmup + num_samples`` transitions per chain. With ``adapt``, :meth:`init` runs the
    first ``num_steps`` (default: all ``num_warmup``) warmup transitions as adaptation, in one
    compiled ``lax.scan`` (BlackJAX's ``window_adaptation(...).run``, or dual averaging), and
    stores the tuned ``step_size`` / ``inverse_mass_matrix`` in the state
    (``state.parameters``), so each chain has its own; every later transition uses them
    unchanged. The first ``num_steps`` of ``MCMC``'s warmup iterations then only count (they do
    not step again: the progress bar runs through them at once, and with ``collect_warmup=True``
    they hold the adapted state), and the remaining ``num_warmup - num_steps`` are burn-in with
    the tuned parameters. ``num_steps`` may not exceed ``num_warmup``.

    **Extra fields.** ``MCMC.run(..., extra_fields=(...))`` accepts any attribute of
    :class:`BlackJAXKernelState`, e.g. ``"accept_prob"``, ``"diverging"``, ``"potential_energy"``,
    ``"info.is_accepted"``, ``"info.num_integration_steps"`` (NUTS), ``"parameters.step_size"``.

    **Example**

    .. code-block:: python

        def model(y):
            mu = numpyro.sample("mu", dist.Normal(0, 10))
            sigma = numpyro.sample("sigma", dist.HalfNormal(5))
            numpyro.sample("y", dist.Normal(mu, sigma), obs=y)

        kernel = BlackJAXKernel(functools.partial(blackjax.mala, step_size=0.1), model=model)
        mcmc = MCMC(kernel, num_warmup=500, num_samples=1000, num_chains=4,
                    chain_method="vectorized")
        mcmc.run(jax.random.key(0), y, extra_fields=("accept_prob",))
        mcmc.print_summary()
        mcmc.get_samples()["sigma"]          # (4000,), positive: constrained values

        # NUTS with Stan's window adaptation of step size and diagonal mass matrix:
        mcmc = MCMC(BlackJAXKernel(blackjax.nuts, model=model, adapt=True),
                    num_warmup=100, num_samples=1000)
    """

    def __init__(
        self,
        kernel: Callable,
        model: Callable | None = None,
        potential_fn: Callable | None = None,
        *,
        adapt: bool | dict = False,
        init_strategy: Callable = init_to_uniform,
        **algorithm_kwargs,
    ):
        if (model is None) == (potential_fn is None):
            raise ValueError(
                "BlackJAXKernel: pass exactly one of `model` (a NumPyro model) and `potential_fn` "
                f"(z -> potential energy U(z)); got model={model!r}, potential_fn={potential_fn!r}."
            )
        for name, fn in (("model", model), ("potential_fn", potential_fn)):
            if fn is not None and not callable(fn):
                raise TypeError(f"BlackJAXKernel: `{name}` must be callable, got {fn!r}.")
        if not callable(init_strategy):
            raise TypeError(
                f"BlackJAXKernel: `init_strategy` must be a NumPyro init strategy such as "
                f"`init_to_uniform`, got {init_strategy!r}."
            )
        if not callable(kernel) or hasattr(kernel, "step"):
            build_algorithm(kernel, _dummy_logdensity)  # raises the TypeError that explains it
        base, fixed = _split_factory(kernel, algorithm_kwargs)
        _check_algorithm_kwargs(base, fixed)
        self._base, self._fixed = base, fixed
        self._adapt = self._parse_adapt(adapt)
        if self._adapt is None:
            # Validate the factory now (a cheap build on a stand-in density), not at MCMC.run.
            build_algorithm(self._factory({}), _dummy_logdensity)
        self._model = model
        self._potential_fn = potential_fn
        self._init_strategy = init_strategy
        self._potential_fn_gen = None
        self._postprocess_fn = None
        self._num_warmup = 0
        self._num_adapt = 0
        self._sample_fn = None
        self._init_cache = None

    # -- configuration ---------------------------------------------------------------------------

    def _factory(self, parameters):
        """``logdensity_fn -> SamplingAlgorithm`` with the fixed and the adapted parameters."""
        return functools.partial(self._base, **{**self._fixed, **parameters})

    def _parse_adapt(self, adapt):
        if adapt is False or adapt is None:
            return None
        if adapt is True:
            options = {}
        elif isinstance(adapt, dict):
            options = dict(adapt)
        else:
            raise TypeError(
                f"BlackJAXKernel: `adapt` must be a bool or a dict of options {ADAPT_OPTIONS}, "
                f"got {adapt!r}."
            )
        unknown = sorted(set(options) - set(ADAPT_OPTIONS))
        if unknown:
            raise ValueError(
                f"BlackJAXKernel: unknown `adapt` option(s) {unknown}; expected some of "
                f"{ADAPT_OPTIONS}."
            )
        base = self._base
        if not (
            callable(getattr(base, "init", None)) and callable(getattr(base, "build_kernel", None))
        ):
            raise TypeError(
                "BlackJAXKernel: `adapt` needs the BlackJAX algorithm itself, e.g. `blackjax.nuts`, "
                "`blackjax.hmc` or `blackjax.mala` (optionally `functools.partial` of it with fixed "
                "keyword options), so that its kernel can be driven by the adaptation; got "
                f"{base!r}, which has no `init`/`build_kernel`."
            )
        sig = _parameters_of(base)
        params = set() if sig is None else set(sig.parameters)
        if "step_size" not in params:
            raise ValueError(
                "BlackJAXKernel: `adapt` tunes `step_size` (and `inverse_mass_matrix`), but "
                f"{getattr(base, 'differentiable', base)!r} takes neither; use `adapt=False` and "
                "pass its parameters."
            )
        options["mass_matrix"] = "inverse_mass_matrix" in params
        fixed = dict(self._fixed)
        if "step_size" in fixed:
            options.setdefault("initial_step_size", fixed.pop("step_size"))
        if "inverse_mass_matrix" in fixed:
            options["initial_inverse_mass_matrix"] = fixed.pop("inverse_mass_matrix")
        if not options["mass_matrix"] and "is_mass_matrix_diagonal" in options:
            raise ValueError(
                "BlackJAXKernel: `adapt` option 'is_mass_matrix_diagonal' needs an algorithm with "
                "an `inverse_mass_matrix` (HMC, NUTS); this one adapts the step size only."
            )
        options.setdefault("initial_step_size", 1.0)
        options.setdefault(
            "target_acceptance_rate",
            _TARGET_WINDOW if options["mass_matrix"] else _TARGET_STEP_SIZE_ONLY,
        )
        if "num_steps" in options:
            check_int("adapt['num_steps']", options["num_steps"], 1)
        self._fixed = fixed
        return options

    # -- MCMCKernel API ----------------------------------------------------------------------------

    @property
    def model(self):
        return self._model

    @property
    def sample_field(self):
        return "z"

    @property
    def default_fields(self):
        return ("z",)

    def get_diagnostics_str(self, state):
        text = f"acc. prob={float(state.mean_accept_prob):.2f}"
        step_size = state.parameters.get("step_size") if state.parameters else None
        if step_size is not None:
            text = f"step size {float(step_size):.2e}. " + text
        return text

    def postprocess_fn(self, model_args, model_kwargs):
        if self._postprocess_fn is None:
            return identity
        return self._postprocess_fn(*model_args, **(model_kwargs or {}))

    def _logdensity_fn(self, model_args, model_kwargs):
        if self._potential_fn_gen is not None:
            potential_fn = self._potential_fn_gen(*model_args, **(model_kwargs or {}))
        else:
            potential_fn = self._potential_fn
        return logdensity_from_potential(potential_fn)

    def _init_params(self, rng_key, model_args, model_kwargs, init_params):
        if self._model is not None:
            check_continuous_latents(self._model, model_args, model_kwargs, self._init_strategy)
            params_info, potential_fn_gen, postprocess_fn, _ = initialize_model(
                rng_key,
                self._model,
                dynamic_args=True,
                init_strategy=self._init_strategy,
                model_args=model_args,
                model_kwargs=model_kwargs,
            )
            self._potential_fn_gen = potential_fn_gen
            self._postprocess_fn = postprocess_fn
            if init_params is None:
                init_params = params_info
        if isinstance(init_params, ParamInfo):
            init_params = init_params.z
        check_finite("init_params", init_params)
        if init_params is None:
            raise ValueError(
                "BlackJAXKernel: with `potential_fn`, pass `init_params` (a pytree like the input "
                "of potential_fn, with a leading num_chains axis when num_chains > 1) to MCMC.run."
            )
        return init_params

    def init(self, rng_key, num_warmup, init_params, model_args, model_kwargs):
        self._num_warmup = num_warmup
        vectorized = not is_prng_key(rng_key)
        if vectorized:
            rng_key, key_model = jnp.swapaxes(jax.vmap(random.split)(rng_key), 0, 1)
        else:
            rng_key, key_model = random.split(rng_key)
        z = self._init_params(key_model, model_args, model_kwargs, init_params)
        num_steps = 0
        if self._adapt is not None:
            num_steps = self._adapt.get("num_steps", num_warmup)
            if num_steps < 1:
                raise ValueError(
                    "BlackJAXKernel: `adapt` needs at least one adaptation step: set MCMC's "
                    "`num_warmup` > 0 (the adaptation runs within the warmup)."
                )
            if num_steps > num_warmup:
                raise ValueError(
                    f"BlackJAXKernel: `adapt['num_steps']` = {num_steps} exceeds MCMC's "
                    f"`num_warmup` = {num_warmup}; the adaptation runs within the warmup "
                    "(warmup = adaptation + burn-in): raise num_warmup or lower num_steps."
                )
        self._num_adapt = num_steps
        # One compiled program for the (vmapped) initialization and adaptation, not op-by-op,
        # reused by a later MCMC.run with the same arguments (NumPyro caches its sampling loop
        # the same way, by the identity of the model arguments).
        init_fn = self._compiled_init(num_steps, vectorized, model_args, model_kwargs)
        if vectorized:
            state = init_fn(z, rng_key)
            step = jax.vmap(self._sample_one, in_axes=(0, None, None))
            index = lambda state: state.i[0]  # noqa: E731 - every chain is at the same step
        else:
            state = init_fn(z, rng_key)
            step = self._sample_one
            index = lambda state: state.i  # noqa: E731
        self._sample_fn = functools.partial(self._skip_adapted, step, index)
        return state

    def _compiled_init(self, num_steps, vectorized, model_args, model_kwargs):
        """``jit((vmap of) _init_one)``, cached for the last ``(num_steps, vectorized, model
        arguments)``: the arguments are compared by identity (not by value), and traced
        arguments are never cached."""
        leaves, treedef = jax.tree.flatten((model_args, model_kwargs or {}))
        key = (num_steps, vectorized, treedef)
        cached = self._init_cache
        if (
            cached is not None
            and cached[0] == key
            and len(cached[1]) == len(leaves)
            and all(a is b for a, b in zip(cached[1], leaves))
        ):
            return cached[2]
        init_one = functools.partial(
            self._init_one, num_steps=num_steps, model_args=model_args, model_kwargs=model_kwargs
        )
        fn = jax.jit(jax.vmap(init_one) if vectorized else init_one)
        if not any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
            self._init_cache = (key, leaves, fn)
        return fn

    def _skip_adapted(self, step, index, state, model_args, model_kwargs):
        """The first ``num_adapt`` warmup iterations were run by the adaptation in :meth:`init`:
        count them without stepping (an unbatched ``lax.cond``, so nothing is computed)."""
        if not self._num_adapt:
            return step(state, model_args, model_kwargs)
        return jax.lax.cond(
            index(state) < self._num_adapt,
            lambda state: state._replace(i=state.i + 1),
            lambda state: step(state, model_args, model_kwargs),
            state,
        )

    def sample(self, state, model_args, model_kwargs):
        if self._sample_fn is None:
            raise RuntimeError("BlackJAXKernel: `init` must be called before `sample`.")
        return self._sample_fn(state, model_args, model_kwargs)

    # -- one chain ---------------------------------------------------------------------------------

    def _init_one(self, z, rng_key, *, num_steps, model_args, model_kwargs):
        rng_key, key_init, key_adapt = random.split(rng_key, 3)
        logdensity_fn = self._logdensity_fn(model_args, model_kwargs)
        if self._adapt is None:
            parameters = {}
            algorithm = build_algorithm(self._factory(parameters), logdensity_fn)
            sampler_state = algorithm.init(z, key_init)
        else:
            sampler_state, parameters = self._run_adaptation(key_adapt, z, logdensity_fn, num_steps)
            algorithm = build_algorithm(self._factory(parameters), logdensity_fn)
        info_shape = jax.eval_shape(algorithm.step, key_init, sampler_state)[1]
        info = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), info_shape)
        return BlackJAXKernelState(
            jnp.zeros((), jnp.int32), sampler_state, info, parameters, jnp.zeros(()), rng_key
        )

    def _sample_one(self, state, model_args, model_kwargs):
        logdensity_fn = self._logdensity_fn(model_args, model_kwargs)
        algorithm = build_algorithm(self._factory(state.parameters), logdensity_fn)
        rng_key, key_step = random.split(state.rng_key)
        sampler_state, info = algorithm.step(key_step, state.sampler_state)
        i = state.i + 1
        # Running mean of the acceptance rate, restarted when sampling begins (as NumPyro's HMC).
        n = jnp.where(state.i < self._num_warmup, i, i - self._num_warmup)
        rate = _acceptance_rate(info, state.mean_accept_prob)
        mean_accept_prob = state.mean_accept_prob + (rate - state.mean_accept_prob) / n
        return BlackJAXKernelState(
            i, sampler_state, info, state.parameters, mean_accept_prob, rng_key
        )

    def _run_adaptation(self, rng_key, z, logdensity_fn, num_steps):
        """``num_steps`` adaptation transitions from ``z``: ``(sampler_state, parameters)``."""
        options = self._adapt
        if options["mass_matrix"]:
            from blackjax import window_adaptation
            from blackjax.adaptation.base import get_filter_adapt_info_fn

            imm = options.get("initial_inverse_mass_matrix")
            warmup = window_adaptation(
                self._base,
                logdensity_fn,
                is_mass_matrix_diagonal=options.get("is_mass_matrix_diagonal", True),
                initial_inverse_mass_matrix=imm,
                initial_step_size=options["initial_step_size"],
                target_acceptance_rate=options["target_acceptance_rate"],
                adaptation_info_fn=get_filter_adapt_info_fn(),
                **self._fixed,
            )
            (sampler_state, parameters), _ = warmup.run(rng_key, z, num_steps=num_steps)
            parameters = {
                "step_size": jnp.asarray(parameters["step_size"]),
                "inverse_mass_matrix": jnp.asarray(parameters["inverse_mass_matrix"]),
            }
            return sampler_state, parameters
        return self._adapt_step_size(rng_key, z, logdensity_fn, num_steps)

    def _adapt_step_size(self, rng_key, z, logdensity_fn, num_steps):
        r"""Dual averaging (Hoffman & Gelman 2014) of :math:`\log` step size towards the target
        acceptance rate, for algorithms with a ``step_size`` only (MALA)."""
        from blackjax.adaptation.step_size import dual_averaging_adaptation

        da_init, da_update, da_final = dual_averaging_adaptation(
            self._adapt["target_acceptance_rate"]
        )
        key_init, key_steps = random.split(rng_key)
        step_size0 = jnp.asarray(self._adapt["initial_step_size"], jnp.float32)
        algorithm = build_algorithm(self._factory({"step_size": step_size0}), logdensity_fn)
        sampler_state = algorithm.init(z, key_init)

        def one_step(carry, key):
            sampler_state, da_state = carry
            step_size = jnp.exp(da_state.log_step_size)
            algorithm = build_algorithm(self._factory({"step_size": step_size}), logdensity_fn)
            sampler_state, info = algorithm.step(key, sampler_state)
            rate = jnp.nan_to_num(_acceptance_rate(info, step_size))  # NaN proposal -> rejected
            return (sampler_state, da_update(da_state, rate)), None

        (sampler_state, da_state), _ = jax.lax.scan(
            one_step, (sampler_state, da_init(step_size0)), random.split(key_steps, num_steps)
        )
        return sampler_state, {"step_size": da_final(da_state)}

    # -- as a block of numpyro.infer.gibbs.Gibbs (e.g. numpyro_ebm.EBMGibbs) ----------------

    def refresh(self, state, model_args, model_kwargs):
        """Re-initialize the BlackJAX state at the same position under the current model
        arguments: in a Gibbs sweep the other blocks' sites moved, and the state's cached log
        density and gradient belong to the old conditional (a stale cache would make the accept
        step target the wrong density). The tuned parameters are kept."""
        logdensity_fn = self._logdensity_fn(model_args, model_kwargs)
        algorithm = build_algorithm(self._factory(state.parameters), logdensity_fn)
        rng_key, key_init = random.split(state.rng_key)
        sampler_state = algorithm.init(state.sampler_state.position, key_init)
        return state._replace(sampler_state=sampler_state, rng_key=rng_key)

    def wrap_model(self, wrapper):
        """A copy of this kernel on ``wrapper(model)`` (how a Gibbs composite conditions a block
        on the other blocks' sites)."""
        if self._model is None:
            raise ValueError("BlackJAXKernel.wrap_model: this kernel has no `model` to wrap.")
        new = copy.copy(self)
        new._model = wrapper(self._model)
        new._potential_fn_gen = new._postprocess_fn = new._sample_fn = new._init_cache = None
        return new

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_sample_fn"] = None
        state["_init_cache"] = None
        return state
