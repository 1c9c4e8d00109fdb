# Over ~400 lines on purpose: one feature, discrete EBM sites inside numpyro.infer.MCMC: the
# block kernel (NumPyro's MCMCKernel protocol, with refresh and wrap_model), the composite
# EBMGibbs and the BlackJAX block adapter share the site detection and value tables below; the
# length is mostly their docstrings. The generic step is in sampling/metropolised_block.py.
r"""Discrete energy-based latent sites inside ``numpyro.infer.MCMC``.

A model such as

.. code-block:: python

    def restoration(y):
        J = numpyro.sample("J", dist.HalfNormal(1.0))
        s = numpyro.sample("s", ising.distribution({"J": J, "h": 0.0}))   # latent spins
        numpyro.factor("log_Z", -ising.log_partition({"J": J, "h": 0.0})) # J latent: needs log Z
        numpyro.sample("y", dist.Normal(s, 0.8), obs=y)

    mcmc = MCMC(EBMGibbs(NUTS(restoration)), num_warmup=500, num_samples=2000)

has a latent :class:`~numpyro_ebm.Unnormalized` site with a discrete support (spins, bits,
categories). No gradient kernel and no enumeration can sample it; :class:`EBMGibbs` runs a
Metropolis-within-Gibbs sweep in the shape of NumPyro's ``HMCGibbs`` (it *is* a
``numpyro.infer.gibbs.Gibbs`` composite): each discrete EBM site is redrawn from its **full
conditional** given every other site, then the continuous sites are moved by the inner kernel
(NUTS, HMC, or any BlackJAX algorithm) given the new discrete values.

**The full conditional.** For a discrete site :math:`s` the conditional is

.. math::

    \log p(s \mid \text{rest}) = -E_\theta(s) + \sum_{c \in \text{children}(s)}
    \log p(c \mid s, \dots) + \text{const} = -U(s) + \text{const},

with :math:`U` NumPyro's potential energy of the model with every other site held at its
current value (:func:`numpyro.infer.util.potential_energy`): the likelihood terms of the sites
that depend on :math:`s` are included without any model-specific derivation (e.g. ``y ~
Normal(s, 0.8)`` adds a field :math:`y_i / 0.8^2` to the Ising spins).

**The kernel** (:func:`~numpyro_ebm.sampling.metropolised_block.metropolised_block_step`). The
coordinates of the site are split into blocks :math:`B` (boolean masks over the event; by
default the two checkerboard colours, or a model's graph colouring: ``blocks={"s": ising}``). For a block, every single-site conditional
:math:`p(s_i = v \mid s_{-i})`, :math:`i \in B`, is evaluated at once (one batched evaluation
of :math:`U` at :math:`|B| \cdot K` configurations, :math:`K` values per coordinate), all
:math:`s_i` are redrawn from them in parallel, :math:`q(s' \mid s) = \prod_{i\in B}
p(s'_i \mid s_{-i})`, and the move is accepted with probability

.. math::

    \min\Big(1, \frac{\pi(s')\, q(s \mid s')}{\pi(s)\, q(s' \mid s)}\Big).

So every step leaves the full conditional exactly invariant, whatever the blocks. When the
coordinates of a block are conditionally independent given the rest (a proper colouring of the
prior's graph and a likelihood that factorizes over the coordinates, as ``Normal(s, sigma)``),
the proposal *is* the exact block conditional and the ratio is 1: every move is accepted and the
step is the model's exact block Gibbs update. A reported acceptance below 1 means the blocks
are not conditionally independent (still exact, only slower mixing). Single-coordinate blocks
(``blocks="single_site"``) are plain systematic-scan Gibbs.
"""

from __future__ import annotations

import copy
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import random
from numpyro.distributions import constraints
from numpyro.handlers import seed, substitute
from numpyro.infer.mcmc import MCMCKernel

try:  # numpyro >= 0.22; the rest of the library runs on older releases (e.g. 0.21)
    from numpyro.infer.gibbs import Gibbs, conditioned, prototype_trace, with_conditioning

    _NO_GIBBS = None
except ImportError:  # pragma: no cover - exercised only on numpyro < 0.22
    Gibbs = object  # EBMGibbs.__init__ raises the ImportError below before anything else
    conditioned = prototype_trace = with_conditioning = None
    _NO_GIBBS = "numpyro.infer.gibbs (new in numpyro 0.22)"
from numpyro.infer.util import potential_energy
from numpyro.util import identity

from numpyro_ebm.distribution import Unnormalized
from numpyro_ebm.sampling.metropolised_block import metropolised_block_step

__all__ = [
    "EBMGibbs",
    "EBMSiteGibbs",
    "EBMSiteGibbsState",
    "discrete_ebm_sites",
    "discrete_gibbs_sites",
    "ebm_initialized",
    "site_values",
]


def _require_numpyro_gibbs(name):
    if _NO_GIBBS is not None:
        import numpyro

        raise ImportError(
            f"{name} builds on {_NO_GIBBS}; the installed numpyro is {numpyro.__version__}. "
            "Upgrade numpyro (pip install 'numpyro>=0.22') to use it."
        )


# ----------------------------------------------------------------------------- sites and values


def _ebm_of(fn):
    """The :class:`Unnormalized` behind a site's distribution (through ``to_event`` / masks)."""
    while fn is not None and not isinstance(fn, Unnormalized):
        fn = getattr(fn, "base_dist", None)
    return fn


def discrete_ebm_sites(model_trace) -> tuple:
    """Names of the latent sample sites of a trace whose distribution is an
    :class:`~numpyro_ebm.Unnormalized` with a discrete support (spins, bits, categories), in
    trace order. Usable as the ``sites`` of a ``numpyro.infer.gibbs.Gibbs`` block."""
    return tuple(
        name
        for name, site in model_trace.items()
        if site["type"] == "sample"
        and not site["is_observed"]
        and _ebm_of(site["fn"]) is not None
        and site["fn"].support.is_discrete
    )


def discrete_gibbs_sites(model_trace) -> tuple:
    """The latent sites :class:`EBMSiteGibbs` updates by default: the discrete EBM sites
    (:func:`discrete_ebm_sites`) and every other latent site with a discrete support
    (``Bernoulli``, ``Categorical``, ...) not marked ``infer={"enumerate": "parallel"}``."""
    return tuple(
        name
        for name, site in model_trace.items()
        if site["type"] == "sample"
        and not site["is_observed"]
        and site["fn"].support.is_discrete
        and site["infer"].get("enumerate", "") != "parallel"
    )


def _discrete_sites_or_raise(model_trace) -> tuple:
    names = discrete_gibbs_sites(model_trace)
    if not names:
        raise ValueError(_NO_DISCRETE_SITE)
    return names


_NO_DISCRETE_SITE = (
    "EBMGibbs: the model has no latent discrete site (e.g. a discrete EBM site "
    "`numpyro.sample('s', Ising(shape).distribution(params))`); use NUTS directly."
)


def site_values(support) -> np.ndarray | None:
    """The values one coordinate of a discrete support takes, e.g. ``(-1, 1)`` for
    :data:`~numpyro_ebm.models.spin`, ``(0, 1)`` for ``boolean``, ``(0, ..., q-1)`` for
    ``integer_interval(0, q - 1)``; ``None`` when the support is not a finite set it knows
    (pass ``values=`` then)."""
    from numpyro_ebm.models.ising import spin

    while isinstance(support, constraints.independent):
        support = support.base_constraint
    if support is spin:
        return np.array([-1.0, 1.0], np.float32)
    if support is constraints.boolean:
        return np.array([0.0, 1.0], np.float32)
    if isinstance(support, constraints.integer_interval):
        lo, hi = support.lower_bound, support.upper_bound
        try:
            lo, hi = int(lo), int(hi)
        except (TypeError, jax.errors.ConcretizationTypeError):
            return None
        if np.ndim(lo) == 0 and np.ndim(hi) == 0 and hi > lo:
            return np.arange(lo, hi + 1)
    return None


def _ebm_init_substitute(site):
    """Initial value of a latent discrete EBM site (which has no exact ``sample``): a draw of its
    annealing path's base (uniform spins / bits / categories) or the first allowed value."""
    if site["type"] != "sample" or site["is_observed"] or site["value"] is not None:
        return None
    ebm = _ebm_of(site["fn"])
    if ebm is None or not site["fn"].support.is_discrete:
        return None
    shape = tuple(site["fn"].shape(site["kwargs"].get("sample_shape", ())))
    path = ebm.annealing_path
    key = site["kwargs"].get("rng_key")
    if key is None:
        import numpyro

        key = numpyro.prng_key()
    if path is not None and key is not None:
        batch = shape[: len(shape) - len(ebm.event_shape)]
        n = int(np.prod(batch)) if batch else 1
        draws = path.sample_base(key, n)
        if isinstance(draws, jax.Array) and draws.shape == (n, *ebm.event_shape):
            return jnp.reshape(draws, shape)
    values = site_values(site["fn"].support)
    first = 0 if values is None else values[0]
    return jnp.full(shape, first, jnp.result_type(float))


def _with_ebm_init(model, *args, **kwargs):
    with substitute(substitute_fn=_ebm_init_substitute):
        return model(*args, **kwargs)


def ebm_initialized(model):
    """``model`` with its latent discrete EBM sites initialized (they have no exact ``sample``):
    what :class:`EBMGibbs` runs, so that NumPyro's prototype traces can be taken."""
    if isinstance(model, functools.partial) and model.func is _with_ebm_init:
        return model
    return functools.partial(_with_ebm_init, model)


# ----------------------------------------------------------------------------- the block kernel


class EBMSiteGibbsState(NamedTuple):
    """State of :class:`EBMSiteGibbs`.

    :ivar z: ``{site: value}``, the current discrete values (constrained, as sampled).
    :ivar potential_energy: :math:`U` of the model at ``z`` under the current conditioning.
    :ivar accept_prob: fraction of the block moves of the last sweep that were accepted (1 when
        every block's conditional factorizes: see the module docstring).
    :ivar flip_rate: fraction of the coordinates the last sweep changed.
    :ivar rng_key: the chain's key.
    """

    z: dict
    potential_energy: Any
    accept_prob: Any
    flip_rate: Any
    rng_key: Any


def _masks_of(name, spec, value_shape, event_shape):
    """Boolean masks over ``value_shape`` from a block spec for site ``name``."""
    if spec is None or (isinstance(spec, str) and spec == "checkerboard"):
        if not event_shape:
            return [np.ones(value_shape, bool)]
        parity = np.indices(event_shape).sum(0) % 2
        masks = [parity == 0, parity == 1]
    elif isinstance(spec, str) and spec == "single_site":
        n = int(np.prod(value_shape))
        return [np.arange(n).reshape(value_shape) == i for i in range(n)]
    else:
        masks = getattr(spec, "colour_masks", spec)
        try:
            masks = [np.asarray(m, bool) for m in masks]
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"EBMGibbs: `blocks[{name!r}]` must be 'checkerboard', 'single_site', a model with "
                f"`colour_masks` or a sequence of boolean masks of the event shape {event_shape}; "
                f"got {spec!r}."
            ) from err
    out = []
    for m in masks:
        try:
            out.append(np.broadcast_to(m, value_shape))
        except ValueError as err:
            raise ValueError(
                f"EBMGibbs: a block mask of site {name!r} has shape {m.shape}; expected the "
                f"event shape {event_shape} (or the value shape {value_shape})."
            ) from err
    cover = np.sum(out, axis=0) if out else np.zeros(value_shape)
    if out and not np.all(cover == 1):
        raise ValueError(
            f"EBMGibbs: the blocks of site {name!r} must cover every coordinate exactly once "
            f"(a partition of the event shape {event_shape})."
        )
    return [m for m in out if m.any()]


class EBMSiteGibbs(MCMCKernel):
    r"""Exact-conditional (Metropolised block) Gibbs updates of the discrete EBM sites of a
    model, a block kernel for ``numpyro.infer.gibbs.Gibbs`` (or alone, on a model whose only
    latent sites are those). Most users want :class:`EBMGibbs`, which composes it with NUTS.

    :param model: the NumPyro model.
    :param sites: the site names to update (default: every latent discrete site,
        :func:`discrete_gibbs_sites`: the discrete :class:`~numpyro_ebm.Unnormalized` sites and
        ordinary discrete sites such as ``Bernoulli`` or ``Categorical``, which get the same
        exact update).
    :param blocks: ``{site: spec}``; ``spec`` is ``"checkerboard"`` (default: the two parity
        classes of the event array), ``"single_site"``, a model with ``colour_masks``
        (``Ising``, ``GraphIsing``, ``Potts``: its graph colouring) or a sequence of boolean masks
        partitioning the event shape.
    :param values: ``{site: values}`` for supports :func:`site_values` does not know.
    :param int num_sweeps: sweeps over the blocks per MCMC step.
    :param int chunk_size: see :func:`metropolised_block_step`.
    """

    sample_field = "z"

    def __init__(self, model, *, sites=None, blocks=None, values=None, num_sweeps: int = 1,
                 chunk_size=None):
        _require_numpyro_gibbs("EBMSiteGibbs")
        if not callable(model):
            raise TypeError(f"EBMSiteGibbs: `model` must be a NumPyro model, got {model!r}.")
        if sites is not None:
            sites = (sites,) if isinstance(sites, str) else tuple(sites)
        for arg, val in (("blocks", blocks), ("values", values)):
            if val is not None and not isinstance(val, dict):
                raise TypeError(f"EBMSiteGibbs: `{arg}` must be a dict {{site: ...}}, got {val!r}.")
        if not isinstance(num_sweeps, int) or num_sweeps < 1:
            raise ValueError(f"EBMSiteGibbs: `num_sweeps` must be an int >= 1, got {num_sweeps!r}.")
        self._model = model
        self._site_spec = sites
        self._blocks = dict(blocks or {})
        self._values = dict(values or {})
        self._num_sweeps = num_sweeps
        self._chunk_size = chunk_size
        self._plan = None  # static: ((site, values, (flat idx, ...)), ...), set by init
        self._prepared = None

    @property
    def model(self):
        return self._model

    @property
    def default_fields(self):
        return ("z",)

    def get_diagnostics_str(self, state):
        return f"EBM acc. {float(state.accept_prob):.2f}, flips {float(state.flip_rate):.2f}"

    def _resolve(self, model_trace):
        found = discrete_gibbs_sites(model_trace)
        names = found if self._site_spec is None else self._site_spec
        if not names:
            raise ValueError(_NO_DISCRETE_SITE)
        unknown = [n for n in names if n not in found]
        if unknown:
            raise ValueError(
                f"EBMGibbs: site(s) {unknown} are not latent discrete sites of the model; its "
                f"latent discrete sites are {list(found)}."
            )
        extra = sorted(set(self._blocks) - set(names)) + sorted(set(self._values) - set(names))
        if extra:
            raise ValueError(f"EBMGibbs: `blocks`/`values` name unknown site(s) {extra}; the "
                             f"sites are {list(names)}.")
        plan = []
        for name in names:
            site = model_trace[name]
            vals = self._values.get(name)
            vals = site_values(site["fn"].support) if vals is None else np.asarray(vals)
            if vals is None:
                raise ValueError(
                    f"EBMGibbs: cannot list the values of site {name!r} (support "
                    f"{site['fn'].support}); pass `values={{{name!r}: (v1, v2, ...)}}`."
                )
            shape = tuple(jnp.shape(site["value"]))
            event_shape = tuple((_ebm_of(site["fn"]) or site["fn"]).event_shape)
            masks = _masks_of(name, self._blocks.get(name), shape, event_shape)
            plan.append((name, vals, tuple(np.flatnonzero(m.ravel()) for m in masks)))
        return tuple(plan)

    def _potential_fn(self, model_args, model_kwargs):
        prepared = self._prepared

        def potential_fn(z):
            return potential_energy(prepared, model_args, with_conditioning(model_kwargs, z), {})

        return potential_fn

    def init(self, rng_key, num_warmup, init_params, model_args, model_kwargs):
        model_kwargs = {} if model_kwargs is None else dict(model_kwargs)
        rng_key, key_trace = random.split(rng_key)
        model = ebm_initialized(self._model)
        tr = prototype_trace(conditioned(model), key_trace, model_args, model_kwargs)
        self._plan = self._resolve(tr)
        param_values = {k: s["value"] for k, s in tr.items() if s["type"] in ("param", "mutable")}
        self._prepared = seed(substitute(conditioned(model), data=param_values), random.key(0))
        init_params = init_params or {}
        z = {}
        for name, vals, _ in self._plan:
            value = jnp.asarray(init_params.get(name, tr[name]["value"]))
            if not isinstance(value, jax.core.Tracer) and not np.all(
                np.isin(np.asarray(value), vals)
            ):
                raise ValueError(
                    f"EBMGibbs: the initial value of site {name!r} has entries outside its "
                    f"values {vals.tolist()}."
                )
            z[name] = value
        pe = self._potential_fn(model_args, model_kwargs)(z)
        one = jnp.ones((), jnp.result_type(float))
        return EBMSiteGibbsState(z, jnp.asarray(pe), one, 0.0 * one, rng_key)

    def sample(self, state, model_args, model_kwargs):
        if self._plan is None:
            raise RuntimeError("EBMSiteGibbs: `init` must be called before `sample`.")
        potential_fn = self._potential_fn(model_args, model_kwargs)
        z = dict(state.z)
        rng_key = state.rng_key
        accepts, flips, num_coords, logp = [], 0, 0, None
        for _ in range(self._num_sweeps):
            for name, vals, block_idx in self._plan:
                others = {k: v for k, v in z.items() if k != name}

                def logdensity_fn(x, name=name, others=others):
                    return -potential_fn({**others, name: x})

                def step(x, inp, vals=vals, logdensity_fn=logdensity_fn):
                    key, idx = inp
                    x, logp, accepted, flipped = metropolised_block_step(
                        key, x, logdensity_fn, idx, vals, self._chunk_size)
                    return x, (logp, accepted, flipped)

                rng_key, key = random.split(rng_key)
                keys = random.split(key, len(block_idx))
                if len(block_idx) > 4 and len({idx.size for idx in block_idx}) == 1:
                    # many equal blocks (single sites, a colouring of a large graph): one scan,
                    # not an unrolled loop, so the program stays small
                    x, (logps, accepted, flipped) = jax.lax.scan(
                        step, z[name], (keys, jnp.asarray(np.stack(block_idx))))
                    logp = logps[-1]
                else:
                    x, out = z[name], []
                    for key_b, idx in zip(keys, block_idx):
                        x, o = step(x, (key_b, idx))
                        out.append(o)
                    logp = out[-1][0]
                    accepted = jnp.stack([o[1] for o in out])
                    flipped = jnp.stack([o[2] for o in out])
                z[name] = x
                accepts.append(accepted)
                flips = flips + jnp.sum(flipped)
                num_coords += sum(idx.size for idx in block_idx)
        accept_prob = jnp.mean(jnp.concatenate(accepts).astype(jnp.result_type(float)))
        flip_rate = flips / num_coords
        return EBMSiteGibbsState(z, -logp, accept_prob, flip_rate, rng_key)

    def refresh(self, state, model_args, model_kwargs):
        """Recompute ``potential_energy`` under the new conditioning (the sweep itself re-evaluates
        every density it uses, so nothing else is cached)."""
        pe = self._potential_fn(model_args, model_kwargs)(state.z)
        return state._replace(potential_energy=jnp.asarray(pe))

    def wrap_model(self, wrapper):
        kernel = copy.copy(self)
        kernel._model = wrapper(self._model)
        kernel._plan = None
        kernel._prepared = None
        return kernel

    def get_constrain_fn(self, model_args, model_kwargs):
        return identity

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_prepared"] = None
        return state


# ----------------------------------------------------------------------------- BlackJAX blocks


# ----------------------------------------------------------------------------- the composite


class EBMGibbs(Gibbs):
    r"""MCMC for models with discrete energy-based latent sites: Metropolis-within-Gibbs, each
    discrete :class:`~numpyro_ebm.Unnormalized` site updated by its exact full-conditional
    (Metropolised) block Gibbs kernel (:class:`EBMSiteGibbs`), the continuous sites by
    ``inner_kernel``. A ``numpyro.infer.gibbs.Gibbs`` composite (the shape of NumPyro's
    ``HMCGibbs``), so ``MCMC``, ``print_summary``, ``get_samples(group_by_chain=True)``,
    ``Predictive`` and ArviZ work as usual. See the module docstring for the conditional and the
    kernel.

    :param inner_kernel: the kernel of the continuous sites: NumPyro's ``NUTS``/``HMC``, a
        :class:`~numpyro_ebm.BlackJAXKernel` built on the model (or any ``MCMCKernel``
        implementing ``refresh`` and ``wrap_model``), or a BlackJAX factory
        (``functools.partial(blackjax.mala, step_size=0.1)``, ``blackjax.nuts``) together with
        ``model=`` (then wrapped in ``BlackJAXKernel(factory, model=model, **blackjax_options)``,
        e.g. ``blackjax_options={"adapt": True}``). ``None`` when every latent site is a
        discrete EBM site (then pass ``model=``).
    :param model: the model, when ``inner_kernel`` is ``None`` or a BlackJAX factory.
    :param sites: as :class:`EBMSiteGibbs`.
    :param blocks: as :class:`EBMSiteGibbs`.
    :param values: as :class:`EBMSiteGibbs`.
    :param num_sweeps: as :class:`EBMSiteGibbs`.
    :param chunk_size: as :class:`EBMSiteGibbs`.
    :param dict blackjax_options: keyword arguments of ``BlackJAXKernel`` (BlackJAX factories).

    **Example**

    .. code-block:: python

        ising = Ising((32, 32), periodic=False)
        def model(y):
            s = numpyro.sample("s", ising.distribution({"J": 0.6, "h": 0.0}))
            sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
            numpyro.sample("y", dist.Normal(s, sigma), obs=y)

        mcmc = MCMC(EBMGibbs(NUTS(model), blocks={"s": ising}), num_warmup=200, num_samples=500)
        mcmc.run(jax.random.key(0), y)
        mcmc.print_summary()
        mcmc.get_samples()["s"].mean(0)                       # posterior spin means

        # any BlackJAX kernel for the continuous sites:
        EBMGibbs(functools.partial(blackjax.mala, step_size=0.05), model=model)
    """

    def __init__(self, inner_kernel=None, *, model=None, sites=None, blocks=None, values=None,
                 num_sweeps: int = 1, chunk_size=None, blackjax_options=None):
        _require_numpyro_gibbs("EBMGibbs")
        if isinstance(inner_kernel, MCMCKernel):
            inner_model = getattr(inner_kernel, "model", None)
            if inner_model is None:
                raise ValueError(
                    "EBMGibbs: `inner_kernel` must be built on the model (e.g. NUTS(model)), not "
                    "on a potential function."
                )
            if model is not None and model is not inner_model:
                raise ValueError("EBMGibbs: `model` differs from the inner kernel's model.")
            model = inner_model
        elif inner_kernel is not None and not callable(inner_kernel):
            raise TypeError(
                "EBMGibbs: `inner_kernel` must be NUTS/HMC (an MCMCKernel with `refresh`), a "
                f"BlackJAX factory such as blackjax.nuts, or None; got {inner_kernel!r}."
            )
        if model is None:
            raise ValueError(
                "EBMGibbs: pass `model=` (needed when `inner_kernel` is None or a BlackJAX "
                "factory)."
            )
        if blackjax_options is not None and not isinstance(blackjax_options, dict):
            raise TypeError(f"EBMGibbs: `blackjax_options` must be a dict, got {blackjax_options!r}.")
        wrapped = ebm_initialized(model)
        site_kernel = EBMSiteGibbs(wrapped, sites=sites, blocks=blocks, values=values,
                                   num_sweeps=num_sweeps, chunk_size=chunk_size)
        spec = _discrete_sites_or_raise if sites is None else ((sites,) if isinstance(sites, str)
                                                         else tuple(sites))
        block_list = [(site_kernel, spec)]
        if isinstance(inner_kernel, MCMCKernel):
            block_list.append((inner_kernel.wrap_model(lambda _: wrapped), None))
        elif inner_kernel is not None:
            from numpyro_ebm.sampling.numpyro_kernel import BlackJAXKernel

            block_list.append(
                (BlackJAXKernel(inner_kernel, model=wrapped, **(blackjax_options or {})), None))
        self._user_model = model
        super().__init__(block_list)
        self.inner_kernel = self._kernels[1] if len(self._kernels) > 1 else None

    def init(self, rng_key, num_warmup, init_params, model_args, model_kwargs):
        try:
            return super().init(rng_key, num_warmup, init_params, model_args, model_kwargs)
        except ValueError as err:
            if "are not owned by any block" in str(err):
                raise ValueError(
                    f"EBMGibbs: {err} Without an `inner_kernel` every latent site must be a "
                    "discrete EBM site; pass e.g. `EBMGibbs(NUTS(model))` for the others."
                ) from err
            raise
