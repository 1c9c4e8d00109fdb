"""Extract ``E(params, x)`` from a NumPyro model: the energy of one of its sites."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.distributions import ExpandedDistribution, MaskedDistribution
from numpyro.infer.initialization import init_to_feasible

__all__ = ["check_params", "energy_fn", "trace_model", "unwrap_distribution"]


def unwrap_distribution(fn):
    """Strip the wrappers that ``numpyro.plate`` / ``handlers.mask`` put around a distribution."""
    while isinstance(fn, (ExpandedDistribution, MaskedDistribution)):
        fn = fn.base_dist
    return fn


def _stand_in_value(msg):
    """A value for a latent site that has none yet (an ``Unnormalized`` site has no sampler):
    NumPyro's ``init_to_feasible`` for continuous supports, a draw (or a feasible point of the
    support, when the distribution cannot be sampled) for discrete ones."""
    if msg["type"] != "sample" or msg["is_observed"] or msg["value"] is not None:
        return None
    fn = msg["fn"]
    if not fn.support.is_discrete:
        return init_to_feasible(msg)
    try:
        return fn.sample(msg["kwargs"]["rng_key"], msg["kwargs"]["sample_shape"])
    except NotImplementedError:
        shape = tuple(msg["kwargs"]["sample_shape"]) + tuple(fn.shape())
        return fn.support.feasible_like(jnp.zeros(shape))


def trace_model(model, params=None, model_args=(), model_kwargs=None, rng_key=None):
    """Trace ``model`` with ``params`` substituted (a dict ``{site name: value}``).

    Latent sites not in ``params`` get a sampled value, or zeros when their distribution has no
    sampler. ``rng_key`` (a JAX key; ``None`` for ``jax.random.key(0)``) seeds the model: it draws
    the minibatch indices of subsampled plates, so a loss must pass its own key to get a fresh
    minibatch each step (and the same key to every trace of one step). Returns NumPyro's ordered
    trace dict.
    """
    if rng_key is None:
        rng_key = jax.random.key(0)
    elif isinstance(rng_key, (int, np.integer)) and not isinstance(rng_key, bool):
        raise TypeError(
            f"`rng_key` must be a JAX PRNG key (e.g. `jax.random.key(0)`), not the int {rng_key!r}."
        )
    model_kwargs = {} if model_kwargs is None else model_kwargs
    model = handlers.substitute(model, data=dict(params or {}))
    model = handlers.substitute(handlers.seed(model, rng_key), substitute_fn=_stand_in_value)
    return handlers.trace(model).get_trace(*model_args, **model_kwargs)


def _sample_site(tr, site):
    if site not in tr or tr[site]["type"] != "sample":
        sample_sites = [k for k, v in tr.items() if v["type"] == "sample"]
        raise ValueError(
            f"`site`={site!r} is not a sample site of the model; its sample sites are "
            f"{sample_sites}."
        )
    return tr[site]


def check_params(params, trace, site: str | None = None) -> None:
    """Match a parameter dict against a model's trace (from :func:`trace_model`).

    ``params`` may hold the model's ``numpyro.param`` sites (Flax modules registered by
    ``flax_module`` appear as ``"<name>$params"``) and values of its latent sample sites. An
    empty dict or ``None`` means "the initial values", on purpose. Otherwise a missing
    ``numpyro.param`` site raises (it would silently be evaluated at its initial value, a fresh
    network for a Flax module), and so does a key that is no site of the model (e.g. a misspelt
    name) while a param or latent site is missing. Extra keys beside a complete set of sites are
    accepted: ``svi.get_params(state)`` also holds the guide's parameters (e.g. a flow guide's),
    which the model ignores. ``site``, the site being evaluated, need not be given a value. The
    check reads only the keys, so it also runs under ``jax.jit``.

    :raises TypeError: if ``params`` is not a dict (or ``None``).
    :raises ValueError: naming the unknown or missing keys and listing the model's param sites.
    """
    if params is None:
        return
    if not isinstance(params, Mapping):
        raise TypeError(
            "`params` must be a dict {param site: value} (svi.get_params(state)) or None; got "
            f"{type(params).__name__}."
        )
    if not params:
        return
    param_sites = [k for k, v in trace.items() if v["type"] == "param"]
    latent_sites = [k for k, v in trace.items() if v["type"] == "sample" and not v["is_observed"]]
    unknown = sorted(k for k in params if k not in param_sites and k not in latent_sites)
    missing = [k for k in param_sites if k not in params]
    unset = [k for k in latent_sites if k not in params and k != site]
    if unknown and (missing or unset):
        raise ValueError(
            f"`params` has key(s) {unknown} that are no site of the model, while "
            + (f"its numpyro.param site(s) {missing}" if missing else f"its latent site(s) {unset}")
            + f" are missing: a misspelt name? The model's numpyro.param sites are {param_sites}"
            + (f" and its latent sample sites {latent_sites}" if latent_sites else "")
            + "."
        )
    if missing:
        raise ValueError(
            f"`params` lacks the model's numpyro.param site(s) {missing} (it has "
            f"{sorted(params)}; the model's param sites are {param_sites}); they would be "
            "evaluated at their initial values (a fresh network for a Flax module). Pass them "
            "all (svi.get_params(state)), or `params={}` / None for the initial values on purpose."
        )
    for k in param_sites:
        want, got = trace[k]["value"], params[k]
        want_shapes = [jnp.shape(leaf) for leaf in jax.tree.leaves(want)]
        got_shapes = [jnp.shape(leaf) for leaf in jax.tree.leaves(got)]
        if jax.tree.structure(want) != jax.tree.structure(got) or want_shapes != got_shapes:
            what = (f"shape {got_shapes[0]}" if len(got_shapes) == 1 else
                    f"leaf shapes {got_shapes}")
            expected = (f"shape {want_shapes[0]}" if len(want_shapes) == 1 else
                        f"leaf shapes {want_shapes}")
            raise ValueError(
                f"`params[{k!r}]` has {what}, but the model's numpyro.param site {k!r} has "
                f"{expected}: parameters of another model or configuration?"
            )


def energy_fn(model, site: str, model_args=(), model_kwargs=None) -> Callable:
    r"""The energy of one site of a NumPyro model as a pure function ``E(params, x)``.

    .. math:: E_\theta(x) = -\log p_\theta(x)\quad\text{(the site's own log density)}

    For an :class:`~numpyro_ebm.Unnormalized` site this is its ``energy_fn`` (plus ``log_Z`` when
    it has one); for any other distribution it is ``-log_prob``. Wrappers added by
    ``numpyro.plate`` are removed, so ``x`` may hold any number of examples.

    :param model: a NumPyro model (a Python callable with ``numpyro.sample`` statements).
    :param str site: the name of the sample site.
    :param model_args: positional arguments of ``model`` (e.g. conditioning inputs).
    :param model_kwargs: keyword arguments of ``model``.
    :return: ``E(params, x)`` where ``params`` is the dict NumPyro's SVI uses
        (``svi.get_params(state)``; constrained values of the ``numpyro.param`` sites, all of them,
        or ``{}`` / ``None`` for their initial values; see :func:`check_params`) and ``x`` has
        shape ``(..., *event_shape)``; the result has shape ``(...)``, one energy per example.
        Jittable and differentiable in both ``params`` and ``x``.

    **Example**

    .. code-block:: python

        E = numpyro_ebm.energy_fn(model, "x", model_args=(data,))
        energies = E(svi.get_params(state), x_test)          # (num_test,)
        grad_x = jax.grad(lambda x: E(params, x).sum())(x_test)
    """
    if not callable(model):
        raise TypeError(f"`model` must be a NumPyro model (a callable), got {model!r}.")
    if not isinstance(site, str):
        raise TypeError(f"`site` must be a site name (str), got {site!r}.")
    # Fail early, before any tracing under jit, on an unknown site name.
    template = trace_model(model, None, model_args, model_kwargs)
    _sample_site(template, site)

    def E(params, x):
        check_params(params, template, site)  # unknown or missing keys raise
        tr = trace_model(model, params, model_args, model_kwargs)
        return -unwrap_distribution(_sample_site(tr, site)["fn"]).log_prob(x)

    return E
