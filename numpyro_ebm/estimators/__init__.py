"""Estimators: losses for NumPyro's ``SVI`` that train the observed ``Unnormalized`` site(s)."""

from numpyro_ebm.estimators._site import EBMSite, EnergyLoss, no_guide, observed_ebm_sites
from numpyro_ebm.estimators.contrastive import (
    ContrastiveDivergence,
    PersistentContrastiveDivergence,
    contrastive_divergence_loss,
)
from numpyro_ebm.estimators.guard import (
    check_finite_params,
    check_svi_result,
    load_checkpoint,
    save_checkpoint,
)

__all__ = [
    "ContrastiveDivergence",
    "EBMSite",
    "EnergyLoss",
    "PersistentContrastiveDivergence",
    "check_finite_params",
    "check_svi_result",
    "contrastive_divergence_loss",
    "load_checkpoint",
    "no_guide",
    "observed_ebm_sites",
    "save_checkpoint",
]
