"""What every estimator shares: find the observed ``Unnormalized`` site(s) of a model and evaluate
their energies under given parameters. Written once, used by every loss."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from numpyro_ebm._validation import check_finite
from numpyro_ebm.distribution import Unnormalized
from numpyro_ebm.energy import trace_model, unwrap_distribution

__all__ = ["EBMSite", "observed_ebm_sites", "no_guide", "EnergyLoss", "SiteLoss"]

# Salt that separates the loss's own random draws (noise, projections) from the model's trace,
# which is seeded by the same ``rng_key`` (it draws the minibatch of a subsampled plate).
_LOSS_KEY_SALT = 0x5EB



class EBMSite(NamedTuple):
    """An observed ``Unnormalized`` site found in a model trace.

    :ivar name: the site name.
    :ivar dist: the ``Unnormalized`` distribution (plate wrappers removed), built under the
        parameters the model was traced with: ``dist.energy(x)`` is differentiable in them.
    :ivar data: the observed value, shape ``(*batch_shape, *event_shape)``.
    :ivar scale: the site's scale (``N / subsample_size`` under a subsampled plate), or ``None``.
    """

    name: str
    dist: Unnormalized
    data: jax.Array
    scale: Any


def observed_ebm_sites(
    model, params, model_args=(), model_kwargs=None, rng_key=None
) -> list[EBMSite]:
    """Trace ``model`` under ``params`` and return its observed ``Unnormalized`` sites.

    Other observed sites keep their data: they are conditioning inputs, as for a conditional
    energy ``E(y, x)``. Raises ``ValueError`` when there is no observed ``Unnormalized`` site or
    when observed data holds NaN/inf. ``rng_key`` seeds the model (it picks the minibatch of a
    subsampled plate): pass the loss's key, and the same key to every trace within one step.
    """
    tr = trace_model(model, params, model_args, model_kwargs, rng_key)
    sites = []
    for name, site in tr.items():
        if site["type"] != "sample" or not site["is_observed"]:
            continue
        fn = unwrap_distribution(site["fn"])
        if isinstance(fn, Unnormalized):
            check_finite(f"observed data of site '{name}'", site["value"])
            sites.append(EBMSite(name, fn, jnp.asarray(site["value"]), site.get("scale")))
    if not sites:
        described = {
            k: type(unwrap_distribution(v["fn"])).__name__ + (" (observed)" if v["is_observed"] else "")
            for k, v in tr.items()
            if v["type"] == "sample"
        }
        raise ValueError(
            "`model` has no observed numpyro_ebm.Unnormalized site to train; its sample sites are "
            f"{described}. Write the EBM as `numpyro.sample(name, Unnormalized(energy_fn, "
            "event_shape), obs=data)`."
        )
    return sites


def check_model_inputs(args, kwargs) -> None:
    """Raise ``ValueError`` if a concrete array among the model's inputs holds NaN or inf.

    Called by the guides the estimators use (:func:`no_guide`, ``pcd.guide``, the flow guide):
    ``SVI.init`` runs the guide eagerly on the data, so bad data fails there with a clear error
    instead of turning into NaN losses inside the compiled training loop.
    """
    for i, a in enumerate(args):
        if hasattr(a, "dtype") and hasattr(a, "shape"):
            check_finite(f"model argument {i} (data)", a)
    for k, v in kwargs.items():
        if hasattr(v, "dtype") and hasattr(v, "shape"):
            check_finite(f"model argument `{k}` (data)", v)


def no_guide(*args, **kwargs):
    """A guide with no sites, for estimators that need none: ``SVI(model, no_guide, optim, loss)``.

    ``SVI`` needs a callable guide (``None`` fails its checks). ``no_guide`` also checks the data
    it is called with at ``SVI.init``: NaN or inf raise a ``ValueError`` naming the argument.
    """
    check_model_inputs(args, kwargs)
    return None


class EnergyLoss:
    """Base of the estimators: NumPyro's ELBO contract for an EBM loss.

    Subclasses implement :meth:`loss_with_mutable_state`, returning ``{"loss": scalar,
    "mutable_state": dict or None}``; :meth:`loss` returns its ``"loss"``. ``SVI`` calls ``loss``
    when there is no mutable state and ``loss_with_mutable_state`` otherwise.
    """

    can_infer_discrete = True  # the EBM sites are observed: no discrete latent enumeration needed

    def loss(self, rng_key, param_map, model, guide, *args, **kwargs):
        return self.loss_with_mutable_state(rng_key, param_map, model, guide, *args, **kwargs)[
            "loss"
        ]

    def loss_with_mutable_state(self, rng_key, param_map, model, guide, *args, **kwargs):
        raise NotImplementedError


class SiteLoss(EnergyLoss):
    """An :class:`EnergyLoss` that is a sum of one loss per observed ``Unnormalized`` site.

    Subclasses implement ``site_loss(rng_key, site) -> scalar``; ``rng_key`` is a key for the
    loss's own random draws, distinct for each site and independent of the minibatch draw.
    The guide is ignored: pass :func:`numpyro_ebm.no_guide`.
    """

    def site_loss(self, rng_key, site: EBMSite):
        raise NotImplementedError

    def loss_with_mutable_state(self, rng_key, param_map, model, guide, *args, **kwargs):
        sites = observed_ebm_sites(model, param_map, args, kwargs, rng_key)
        loss_key = jax.random.fold_in(rng_key, _LOSS_KEY_SALT)
        loss = sum(
            self.site_loss(jax.random.fold_in(loss_key, i), site) for i, site in enumerate(sites)
        )
        return {"loss": loss, "mutable_state": None}
