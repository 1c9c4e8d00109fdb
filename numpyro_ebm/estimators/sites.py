"""The observed ``Unnormalized`` sites of a model: the trace (:func:`observed_ebm_sites`) and the
selection by kind (:func:`select_sites`) that :class:`~numpyro_ebm.EnergyEstimator` applies.

Kinds of site (the default rule of an estimator's ``sites=None``):

* ``"label"``: a discrete support and ``event_shape ()`` (:func:`is_label_site`: a class label),
  for :class:`~numpyro_ebm.ConditionalMaximumLikelihood`;
* ``"sampled"``: every other site, continuous or discrete with event dimensions (an RBM's binary
  vector), for ``ContrastiveDivergence`` / ``PersistentContrastiveDivergence``;
* ``"continuous"``: a continuous support, for the score-matching estimators,
  ``NoiseContrastiveEstimation`` and ``FlowContrastiveEstimation``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from numpyro_ebm._validation import check_finite
from numpyro_ebm.distribution import Unnormalized
from numpyro_ebm.energy import trace_model, unwrap_distribution

__all__ = [
    "SITE_KINDS",
    "EBMSite",
    "check_site_names",
    "is_label_site",
    "observed_ebm_sites",
    "select_sites",
    "site_events",
]

SITE_KINDS = ("label", "sampled", "continuous")


# --------------------------------------------------------------------------------------------
# the trace of the observed Unnormalized sites


class EBMSite(NamedTuple):
    """An observed ``Unnormalized`` site found in a model trace.

    :ivar name: the site name.
    :ivar dist: the ``Unnormalized`` distribution (plate wrappers removed), built under the
        parameters the model was traced with: ``dist.energy(x)`` is differentiable in them.
    :ivar data: the observed value, shape ``(*batch_shape, *event_shape)``.
    :ivar frozen: the same distribution from a trace under stop-gradient parameters and the same
        model key (hence the same minibatch), to draw MCMC negatives from; ``None`` unless the
        estimator sets :attr:`EnergyEstimator.stop_gradient_trace`.
    :ivar example_index: when the site has one batch dimension under one ``numpyro.plate``: the
        indices of the minibatch's examples in the plate (its subsample indices; ``arange(size)``
        without subsampling), ``(batch,)``; else ``None``. Per-example state (PCD's chains of a
        conditional energy) is kept by these indices.
    :ivar num_examples: the plate's full size when ``example_index`` is set, else ``None``.
    """

    name: str
    dist: Unnormalized
    data: jax.Array
    frozen: Unnormalized | None = None
    example_index: jax.Array | None = None
    num_examples: int | None = None


def _plate_indices(tr, site):
    """``(indices, size)`` of the one plate over the site's one batch dimension, or ``(None,
    None)``."""
    frames = [f for f in site.get("cond_indep_stack", ()) if f.dim is not None]
    if len(frames) != 1 or len(site["fn"].batch_shape) != 1:
        return None, None
    plate = tr.get(frames[0].name)
    if plate is None or plate["type"] != "plate":
        return None, None
    size = plate["args"][0]
    return jnp.asarray(plate["value"]), int(size)


def observed_ebm_sites(
    model, params, model_args=(), model_kwargs=None, rng_key=None
) -> list[EBMSite]:
    """Trace ``model`` under ``params`` and return its observed ``Unnormalized`` sites.

    Other observed sites keep their data: they are conditioning inputs, as for a conditional
    energy ``E(y, x)``. Raises ``ValueError`` when there is no observed ``Unnormalized`` site or
    when observed data holds NaN/inf.

    :param model: a NumPyro model.
    :param params: ``{site name: value}`` substituted into the model (``None``: its own values).
    :param model_args: positional arguments of ``model``.
    :param model_kwargs: keyword arguments of ``model``.
    :param rng_key: a JAX key that seeds the model (it picks the minibatch of a subsampled
        plate): every trace of one training step takes the same key (:func:`split_key`'s
        ``model_key``). ``None``: ``jax.random.key(0)``.
    :return: the sites in trace order.
    """
    rng_key = jax.random.key(0) if rng_key is None else rng_key
    tr = trace_model(model, params, model_args, model_kwargs, rng_key)
    sites = []
    for name, site in tr.items():
        if site["type"] != "sample" or not site["is_observed"]:
            continue
        fn = unwrap_distribution(site["fn"])
        if isinstance(fn, Unnormalized):
            check_finite(f"observed data of site '{name}'", site["value"])
            index, size = _plate_indices(tr, site)
            sites.append(EBMSite(name, fn, jnp.asarray(site["value"]), None, index, size))
    if not sites:
        described = {
            k: type(unwrap_distribution(v["fn"])).__name__
            + (" (observed)" if v["is_observed"] else "")
            for k, v in tr.items()
            if v["type"] == "sample"
        }
        raise ValueError(
            "`model` has no observed numpyro_ebm.Unnormalized site to train; its sample sites are "
            f"{described}. Write the EBM as `numpyro.sample(name, Unnormalized(energy_fn, "
            "event_shape), obs=data)`."
        )
    return sites


def site_events(dist: Unnormalized, value) -> jax.Array:
    """Flatten the batch dimensions of a site's value: ``(n, *event_shape)``."""
    return jnp.reshape(jnp.asarray(value), (-1, *tuple(dist.event_shape)))


# --------------------------------------------------------------------------------------------
# site selection


def is_label_site(site: EBMSite) -> bool:
    """True for a *label* site: a discrete support and one value per example (``event_shape
    ()``), e.g. a class label from :func:`numpyro_ebm.label_ebm`. Its negative phase is exact by
    enumeration (:class:`~numpyro_ebm.ConditionalMaximumLikelihood`); every other site
    (continuous, or discrete with event dimensions such as an RBM's binary vector or Ising
    spins) is sampled by MCMC (CD/PCD)."""
    return _is_discrete(site) and tuple(site.dist.event_shape) == ()


def _is_discrete(site: EBMSite) -> bool:
    return bool(getattr(site.dist.support, "is_discrete", False))


def _has_kind(site: EBMSite, kind: str) -> bool:
    if kind == "label":
        return is_label_site(site)
    if kind == "sampled":
        return not is_label_site(site)
    return not _is_discrete(site)


_KIND_TEXT = {
    "label": "label sites (discrete support, event_shape ())",
    "sampled": "continuous support or discrete vectors (non-label sites)",
    "continuous": "continuous support",
}
_KIND_ADVICE = {
    "label": "use ContrastiveDivergence / PersistentContrastiveDivergence for non-label sites.",
    "sampled": "use ConditionalMaximumLikelihood for discrete (class label) sites.",
    "continuous": (
        "use ContrastiveDivergence / PersistentContrastiveDivergence (with a Gibbs kernel) for "
        "discrete vectors and ConditionalMaximumLikelihood for class labels."
    ),
}


def check_site_names(sites) -> tuple[str, ...] | None:
    """Validate a ``sites=`` argument: ``None`` or a (non-empty) sequence of site names."""
    if sites is None:
        return None
    if isinstance(sites, str):
        sites = (sites,)
    try:
        sites = tuple(sites)
    except TypeError as err:
        raise TypeError(
            f"`sites` must be None or a non-empty sequence of site names, got {sites!r}."
        ) from err
    if not sites or not all(isinstance(s, str) for s in sites):
        raise TypeError(
            f"`sites` must be None or a non-empty sequence of site names, got {sites!r}."
        )
    return sites


def select_sites(
    sites: list[EBMSite], names: tuple[str, ...] | None, kind: str, estimator: str
) -> list[EBMSite]:
    """The observed ``Unnormalized`` sites an estimator trains.

    :param sites: the model's observed ``Unnormalized`` sites (:func:`observed_ebm_sites`).
    :param names: the estimator's ``sites=`` argument: ``None`` selects every site of ``kind``
        (so that estimators for different kinds combine on one model); names select exactly
        those sites, checked to exist and to be of ``kind``.
    :param str kind: ``"label"``, ``"sampled"`` or ``"continuous"`` (see the module docstring).
    :param str estimator: the estimator's name, for error messages.
    :raises ValueError: when nothing is left to train, or a name is unknown or of another kind.
    """
    if kind not in SITE_KINDS:
        raise ValueError(f"`kind` must be one of {SITE_KINDS}, got {kind!r}.")
    if names is None:
        chosen = [s for s in sites if _has_kind(s, kind)]
        if not chosen:
            raise ValueError(
                f"{estimator} trains observed Unnormalized sites with {_KIND_TEXT[kind]}; the "
                f"model's observed Unnormalized sites {[s.name for s in sites]} have none (name "
                "the sites to train with `sites=`)."
            )
        return chosen
    by_name = {s.name: s for s in sites}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(
            f"{estimator}: `sites`={list(names)} names {missing}, which are not observed "
            f"Unnormalized sites of the model (those are {list(by_name)})."
        )
    wrong = [n for n in names if not _has_kind(by_name[n], kind)]
    if wrong:
        raise ValueError(
            f"{estimator} trains {_KIND_TEXT[kind]}, but `sites` names {wrong}, which are not; "
            + _KIND_ADVICE[kind]
        )
    return [by_name[n] for n in names]
