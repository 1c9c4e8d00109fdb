"""Estimators: losses for NumPyro's ``SVI`` that train the observed ``Unnormalized`` site(s)."""

from numpyro_ebm.estimators.base import (
    EBMSite,
    EnergyLoss,
    SiteLoss,
    check_model_inputs,
    no_guide,
    observed_ebm_sites,
)
from numpyro_ebm.estimators.conditional import (
    CombinedLoss,
    ConditionalMaximumLikelihood,
    conditional_nll,
    enumerate_energies,
    joint_energy,
    label_ebm,
    label_energies,
)
from numpyro_ebm.estimators.contrastive import (
    ContrastiveDivergence,
    PersistentContrastiveDivergence,
    contrastive_divergence_loss,
)
from numpyro_ebm.estimators.fce import FlowContrastiveEstimation, fce_equilibrium_loss
from numpyro_ebm.estimators.nce import NoiseContrastiveEstimation, nce_loss
from numpyro_ebm.estimators.score_matching import (
    DenoisingScoreMatching,
    ScoreMatching,
    SlicedScoreMatching,
    denoising_score_matching_loss,
    score_matching_loss,
    sliced_score_matching_loss,
)
from numpyro_ebm.training import (
    check_finite_params,
    check_svi_result,
    load_checkpoint,
    save_checkpoint,
)

__all__ = [
    "CombinedLoss",
    "ConditionalMaximumLikelihood",
    "conditional_nll",
    "enumerate_energies",
    "joint_energy",
    "label_ebm",
    "label_energies",
    "ContrastiveDivergence",
    "DenoisingScoreMatching",
    "EBMSite",
    "EnergyLoss",
    "FlowContrastiveEstimation",
    "NoiseContrastiveEstimation",
    "PersistentContrastiveDivergence",
    "ScoreMatching",
    "SiteLoss",
    "SlicedScoreMatching",
    "check_model_inputs",
    "check_finite_params",
    "check_svi_result",
    "contrastive_divergence_loss",
    "denoising_score_matching_loss",
    "fce_equilibrium_loss",
    "load_checkpoint",
    "nce_loss",
    "no_guide",
    "observed_ebm_sites",
    "save_checkpoint",
    "score_matching_loss",
    "sliced_score_matching_loss",
]
