"""What every estimator shares: find the observed ``Unnormalized`` site(s) of a model and evaluate
their energies under given parameters. Written once, used by every loss."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from numpyro_ebm._validation import check_finite
from numpyro_ebm.distribution import Unnormalized
from numpyro_ebm.energy import trace_model, unwrap_distribution

__all__ = ["EBMSite", "observed_ebm_sites", "no_guide", "EnergyLoss"]


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
    model, params, model_args=(), model_kwargs=None, rng_key=0
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


def no_guide(*args, **kwargs):
    """A guide with no sites, for estimators that need none: ``SVI(model, no_guide, optim, loss)``."""
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
