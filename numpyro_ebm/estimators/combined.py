r""":class:`CombinedLoss`: several estimators on one model, one minibatch per step.

.. math:: L = \sum_j w_j L_j

Every :class:`~numpyro_ebm.estimators.base.EnergyEstimator` member is evaluated with the same
``model_key`` (:func:`~numpyro_ebm.estimators.base.split_key` of the step's ``rng_key``), so all
of them trace the model on the same minibatch of a subsampled plate; member ``j`` draws its own
randomness from ``fold_in(loss_key, j)``, independent of the others'.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
from numpyro.infer.elbo import ELBO

from numpyro_ebm.estimators.base import EnergyEstimator, check_model_inputs, split_key

__all__ = ["CombinedLoss"]


class CombinedLoss(ELBO):
    r"""A weighted sum of estimators on one model: :math:`L = \sum_j w_j L_j`.

    Each estimator trains the sites it selects (by default by kind: CD/PCD the non-label sites,
    :class:`~numpyro_ebm.ConditionalMaximumLikelihood` the label sites, score matching / NCE /
    FCE the continuous ones; or the sites named by its ``sites=``). All
    :class:`~numpyro_ebm.EnergyEstimator` members see the **same minibatch** in a step: they trace
    the model with one model key. Mutable states (PCD chains) are merged; use the combined loss's
    own guide, which declares every member's state (``combined.guide`` /
    ``combined.make_guide(model)``).

    This is JEM (Grathwohl et al. 2019): :math:`\log p(x, y) = \log p(x) + \log p(y\mid x)`,
    trained as ``CombinedLoss(pcd, ConditionalMaximumLikelihood(), weights=(1.0, 1.0))``.

    **Scale.** EBM losses are per-example means (:mod:`numpyro_ebm.estimators.base`). A member
    that is another NumPyro ELBO (e.g. ``Trace_ELBO()`` for other sites of the model) is on the
    data-set scale (a sum over the data, ``N / B`` times a minibatch sum): weight the EBM members
    by ``N`` (or the ELBO by ``1 / N``) to add the terms of one joint log-likelihood. Such a
    member is called with its own key, ``fold_in(loss_key, j)``, and draws its own minibatch.

    :param losses: the estimators (:class:`~numpyro_ebm.EnergyEstimator` instances, or any
        object with NumPyro's ``loss_with_mutable_state`` contract).
    :param weights: one float per loss (default all 1).

    **Example**

    .. code-block:: python

        jem = numpyro_ebm.CombinedLoss(pcd, numpyro_ebm.ConditionalMaximumLikelihood())
        svi = SVI(model, jem.guide, optax.adam(1e-3), loss=jem)
    """

    can_infer_discrete = True

    def __init__(self, *losses, weights: Sequence[float] | None = None):
        super().__init__(num_particles=1)
        if not losses:
            raise ValueError("CombinedLoss needs at least one loss.")
        for loss in losses:
            if not callable(getattr(loss, "loss_with_mutable_state", None)):
                raise TypeError(
                    "CombinedLoss: every loss needs a `loss_with_mutable_state` method (an "
                    f"EnergyEstimator such as PersistentContrastiveDivergence); got {loss!r}."
                )
        weights = (1.0,) * len(losses) if weights is None else tuple(float(w) for w in weights)
        if len(weights) != len(losses):
            raise ValueError(
                f"`weights` must have one entry per loss ({len(losses)}), got {len(weights)}."
            )
        names = [
            loss.state_name
            for loss in losses
            if isinstance(loss, EnergyEstimator) and loss.state_name is not None
        ]
        if len(set(names)) != len(names):
            raise ValueError(
                f"CombinedLoss: two losses keep mutable state under the same name ({names})."
            )
        self.losses = losses
        self.weights = weights

    def _stateful(self) -> list:
        return [
            loss
            for loss in self.losses
            if isinstance(loss, EnergyEstimator) and loss.state_name is not None
        ]

    def guide(self, *args, **kwargs):
        """A guide that declares every member's state (see ``EnergyEstimator.guide``)."""
        for loss in self._stateful():
            loss.guide(*args, **kwargs)
        check_model_inputs(args, kwargs)

    def make_guide(self, model) -> Callable:
        """A guide for ``model`` that declares every member's state, each built from the sites
        that member trains (see ``EnergyEstimator.make_guide``)."""
        guides = [loss.make_guide(model) for loss in self._stateful()]

        def guide(*args, **kwargs):
            for g in guides:
                g(*args, **kwargs)
            check_model_inputs(args, kwargs)

        return guide

    def loss_with_mutable_state(self, rng_key, param_map, model, guide, *args, **kwargs):
        model_key, loss_key = split_key(rng_key)
        total, state = 0.0, {}
        for j, (loss, weight) in enumerate(zip(self.losses, self.weights)):
            key = jax.random.fold_in(loss_key, j)
            if isinstance(loss, EnergyEstimator):
                out = loss.estimate(model_key, key, param_map, model, guide, args, kwargs)
            else:
                out = loss.loss_with_mutable_state(key, param_map, model, guide, *args, **kwargs)
            total = total + weight * out["loss"]
            for name, value in (out.get("mutable_state") or {}).items():
                if name in state:
                    raise ValueError(
                        f"CombinedLoss: two losses keep mutable state under the same name {name!r}."
                    )
                state[name] = value
        return {"loss": total, "mutable_state": state or None}

    def loss(self, rng_key, param_map, model, guide, *args, **kwargs):
        return self.loss_with_mutable_state(rng_key, param_map, model, guide, *args, **kwargs)[
            "loss"
        ]
