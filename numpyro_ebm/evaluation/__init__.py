"""Evaluate an EBM: partition functions (quadrature, enumeration, annealed importance sampling),
held-out and pseudo log-likelihoods, and sample-quality diagnostics."""

from numpyro_ebm.evaluation.ais import (
    AISResult,
    annealed_importance_sampling,
    check_betas,
    logz_ais,
    temperature_schedule,
)
from numpyro_ebm.evaluation.diagnostics import auroc, ess_per_second, median_bandwidth, mmd, psnr
from numpyro_ebm.evaluation.likelihood import (
    LogLikelihood,
    heldout_log_likelihood,
    pseudo_log_likelihood,
)
from numpyro_ebm.evaluation.partition import logz_exact, logz_quadrature
from numpyro_ebm.evaluation.tempering import (
    SteppingStoneResult,
    energy_path,
    logz_smc,
    logz_stepping_stone,
    stepping_stone,
)

__all__ = [
    "AISResult",
    "LogLikelihood",
    "annealed_importance_sampling",
    "auroc",
    "check_betas",
    "ess_per_second",
    "heldout_log_likelihood",
    "logz_ais",
    "logz_exact",
    "logz_quadrature",
    "median_bandwidth",
    "mmd",
    "psnr",
    "pseudo_log_likelihood",
    "temperature_schedule",
    # issue 11: tempering
    "SteppingStoneResult",
    "energy_path",
    "logz_smc",
    "logz_stepping_stone",
    "stepping_stone",
]
