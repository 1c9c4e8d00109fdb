"""numpyro-ebm: energy-based models as first-class citizens of NumPyro.

Define an EBM as a NumPyro site (:class:`Unnormalized`, :func:`energy_factor`) and extract its
energy (:func:`energy_fn`); sample it with any BlackJAX kernel over many chains
(:func:`sample_chains`, :func:`ula`, :func:`gibbs`) or inside ``numpyro.infer.MCMC``
(:class:`BlackJAXKernel`); train it with SVI losses (contrastive divergence, score matching, NCE,
FCE); evaluate it with partition functions (:func:`logz_quadrature`, :func:`logz_exact`,
:func:`logz_ais`) and likelihoods (:func:`heldout_log_likelihood`). Classical models live in
:mod:`numpyro_ebm.models`, toy densities in :mod:`numpyro_ebm.datasets`.
"""

from numpyro_ebm import applications, datasets, evaluation, models, nets
from numpyro_ebm.cache import enable_compilation_cache
from numpyro_ebm.distribution import Unnormalized, energy_factor
from numpyro_ebm.energy import energy_fn
from numpyro_ebm.estimators import (
    AdversarialEstimation,
    CombinedLoss,
    ConditionalMaximumLikelihood,
    ContrastiveDivergence,
    DenoisingScoreMatching,
    EBMSite,
    EnergyEstimator,
    FlowContrastiveEstimation,
    FlowGuide,
    GeneratorGuide,
    LogZBound,
    MLPGenerator,
    NoiseContrastiveEstimation,
    PersistentContrastiveDivergence,
    ScoreMatching,
    SlicedScoreMatching,
    contrastive_divergence_loss,
    fce_optimizer,
    flow_guide,
    generator_guide,
    label_ebm,
    label_energies,
    logz_lower_bound,
    no_guide,
    observed_ebm_sites,
    sample_generator,
)
from numpyro_ebm.evaluation import diagnostics
from numpyro_ebm.evaluation.ais import (
    AISResult,
    annealed_importance_sampling,
    logz_ais,
    temperature_schedule,
)
from numpyro_ebm.evaluation.likelihood import (
    LogLikelihood,
    heldout_log_likelihood,
    pseudo_log_likelihood,
)
from numpyro_ebm.evaluation.partition import logz_exact, logz_quadrature
from numpyro_ebm.evaluation.tempering import (
    SteppingStoneResult,
    logz_smc,
    logz_stepping_stone,
    stepping_stone,
)
from numpyro_ebm.sampling.annealed_langevin import (
    AnnealedLangevinResult,
    NoiseConditionalEnergy,
    annealed_langevin,
    at_noise_level,
    geometric_sigmas,
)
from numpyro_ebm.sampling.annealing import AnnealingPath, geometric_path, transition_path
from numpyro_ebm.sampling.block_gibbs import block_gibbs
from numpyro_ebm.sampling.cftp import ising_cftp
from numpyro_ebm.sampling.chains import ChainResult, RunningMoments, pool_moments, sample_chains
from numpyro_ebm.sampling.clamp import clamp, clamped_kernel, embed
from numpyro_ebm.sampling.discrete_langevin import discrete_langevin
from numpyro_ebm.sampling.ebm_gibbs import EBMGibbs, EBMSiteGibbs
from numpyro_ebm.sampling.exchange import ExchangeKernel
from numpyro_ebm.sampling.gibbs import gibbs
from numpyro_ebm.sampling.gibbs_with_gradients import gibbs_with_gradients
from numpyro_ebm.sampling.langevin import ula
from numpyro_ebm.sampling.mala import mala
from numpyro_ebm.sampling.numpyro_kernel import BlackJAXKernel, BlackJAXKernelState
from numpyro_ebm.sampling.tempering import (
    PTInfo,
    PTState,
    TemperingSummary,
    adapt_ladder,
    parallel_tempering,
    tempering_summary,
    tune_ladder,
)
from numpyro_ebm.training import (
    check_finite_params,
    check_svi_result,
    load_checkpoint,
    save_checkpoint,
)

__version__ = "0.2.3"

__all__ = [
    "AISResult",
    "AnnealingPath",
    "BlackJAXKernel",
    "BlackJAXKernelState",
    "ChainResult",
    "CombinedLoss",
    "ConditionalMaximumLikelihood",
    "ContrastiveDivergence",
    "DenoisingScoreMatching",
    "EBMSite",
    "EnergyEstimator",
    "ExchangeKernel",
    "FlowContrastiveEstimation",
    "FlowGuide",
    "LogLikelihood",
    "NoiseContrastiveEstimation",
    "PersistentContrastiveDivergence",
    "RunningMoments",
    "ScoreMatching",
    "SlicedScoreMatching",
    "Unnormalized",
    "annealed_importance_sampling",
    "applications",
    "block_gibbs",
    "check_finite_params",
    "check_svi_result",
    "contrastive_divergence_loss",
    "datasets",
    "diagnostics",
    "energy_factor",
    "evaluation",
    "enable_compilation_cache",
    "energy_fn",
    "fce_optimizer",
    "flow_guide",
    "geometric_path",
    "gibbs",
    "gibbs_with_gradients",
    "heldout_log_likelihood",
    "ising_cftp",
    "label_ebm",
    "label_energies",
    "load_checkpoint",
    "logz_ais",
    "logz_exact",
    "logz_quadrature",
    "mala",
    "models",
    "nets",
    "no_guide",
    "observed_ebm_sites",
    "pool_moments",
    "pseudo_log_likelihood",
    "sample_chains",
    "save_checkpoint",
    "temperature_schedule",
    "transition_path",
    "ula",
    # issue 11: tempering
    "PTInfo",
    "PTState",
    "SteppingStoneResult",
    "TemperingSummary",
    "adapt_ladder",
    "logz_smc",
    "logz_stepping_stone",
    "parallel_tempering",
    "stepping_stone",
    "tempering_summary",
    "tune_ladder",
    # issue 12: discrete EBM sites in MCMC, clamped sampling
    "EBMGibbs",
    "EBMSiteGibbs",
    "clamp",
    "clamped_kernel",
    "discrete_langevin",
    "embed",
    # issue 13: adversarial training
    "AdversarialEstimation",
    "GeneratorGuide",
    "LogZBound",
    "MLPGenerator",
    "generator_guide",
    "logz_lower_bound",
    "sample_generator",
    # issue 11: annealed training
    "AnnealedLangevinResult",
    "NoiseConditionalEnergy",
    "annealed_langevin",
    "at_noise_level",
    "geometric_sigmas",
]
