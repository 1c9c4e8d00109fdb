"""Estimators: losses for NumPyro's ``SVI`` that train the observed ``Unnormalized`` site(s).

One base (:class:`EnergyEstimator`, in ``base.py``; the site trace and selection in
``sites.py``), one estimator per module, and
:class:`CombinedLoss` to train several kinds of sites of one model together.
"""

from numpyro_ebm.estimators.adversarial import (
    AdversarialEstimation,
    LogZBound,
    logz_lower_bound,
    sample_generator,
)
from numpyro_ebm.estimators.base import (
    ANY_SITE,
    EnergyEstimator,
    check_model_inputs,
    no_guide,
    split_key,
)
from numpyro_ebm.estimators.combined import CombinedLoss
from numpyro_ebm.estimators.conditional import (
    ConditionalMaximumLikelihood,
    conditional_nll,
    enumerate_energies,
    joint_energy,
    label_ebm,
    label_energies,
)
from numpyro_ebm.estimators.contrastive import ContrastiveDivergence, contrastive_divergence_loss
from numpyro_ebm.estimators.fce import (
    FlowContrastiveEstimation,
    fce_equilibrium_loss,
    reverse_gradient,
    trace_adversary,
)
from numpyro_ebm.estimators.flows import (
    FlowGuide,
    fce_optimizer,
    flow_guide,
    guide_distribution,
    sample_and_log_prob,
)
from numpyro_ebm.estimators.generators import (
    GeneratorDistribution,
    GeneratorGuide,
    MLPGenerator,
    generator_guide,
    vera_score,
)
from numpyro_ebm.estimators.nce import NoiseContrastiveEstimation, nce_loss
from numpyro_ebm.estimators.persistent import PCD_STATE, PersistentContrastiveDivergence
from numpyro_ebm.estimators.score_matching import (
    DenoisingScoreMatching,
    ScoreMatching,
    SlicedScoreMatching,
    denoising_score_matching_loss,
    score_matching_loss,
    sliced_score_matching_loss,
)
from numpyro_ebm.estimators.sites import (
    EBMSite,
    check_site_names,
    is_label_site,
    observed_ebm_sites,
    select_sites,
    site_events,
)

__all__ = [
    "ANY_SITE",
    "CombinedLoss",
    "ConditionalMaximumLikelihood",
    "ContrastiveDivergence",
    "DenoisingScoreMatching",
    "EBMSite",
    "EnergyEstimator",
    "FlowContrastiveEstimation",
    "FlowGuide",
    "NoiseContrastiveEstimation",
    "PCD_STATE",
    "PersistentContrastiveDivergence",
    "ScoreMatching",
    "SlicedScoreMatching",
    "check_model_inputs",
    "check_site_names",
    "conditional_nll",
    "contrastive_divergence_loss",
    "denoising_score_matching_loss",
    "enumerate_energies",
    "fce_equilibrium_loss",
    "fce_optimizer",
    "flow_guide",
    "is_label_site",
    "joint_energy",
    "label_ebm",
    "label_energies",
    "nce_loss",
    "no_guide",
    "observed_ebm_sites",
    "reverse_gradient",
    "score_matching_loss",
    "select_sites",
    "site_events",
    "sliced_score_matching_loss",
    "split_key",
    # issue 13: adversarial training
    "AdversarialEstimation",
    "GeneratorDistribution",
    "GeneratorGuide",
    "LogZBound",
    "MLPGenerator",
    "generator_guide",
    "guide_distribution",
    "logz_lower_bound",
    "sample_and_log_prob",
    "sample_generator",
    "trace_adversary",
    "vera_score",
]
