"""Samplers: BlackJAX-shaped kernels (one algorithm per module) and the many-chain driver."""

from numpyro_ebm.sampling.block_gibbs import BlockGibbsState, block_gibbs
from numpyro_ebm.sampling.chains import ChainResult, RunningMoments, pool_moments, sample_chains
from numpyro_ebm.sampling.discrete import GibbsInfo
from numpyro_ebm.sampling.gibbs import GibbsState, gibbs
from numpyro_ebm.sampling.gibbs_with_gradients import GWGInfo, GWGState, gibbs_with_gradients
from numpyro_ebm.sampling.langevin import ULAInfo, ULAState, ula
from numpyro_ebm.sampling.numpyro_kernel import BlackJAXKernel, BlackJAXKernelState

# isort: split
# issue 11: tempering
from numpyro_ebm.sampling.tempering import (
    PTInfo,
    PTState,
    PTStats,
    TemperingSummary,
    adapt_ladder,
    ladder_from_rejection,
    parallel_tempering,
    reset_stats,
    swap_log_acceptance,
    swap_permutation,
    tempered_logdensity,
    tempering_summary,
    tune_ladder,
)

# isort: split
# issue 11: annealed training
from numpyro_ebm.sampling.annealed_langevin import (
    AnnealedLangevinResult,
    NoiseConditionalEnergy,
    anneal_chains,
    annealed_langevin,
    at_noise_level,
    check_sigmas,
    geometric_sigmas,
)

__all__ = [
    "BlackJAXKernel",
    "BlackJAXKernelState",
    "BlockGibbsState",
    "ChainResult",
    "GWGInfo",
    "GWGState",
    "GibbsInfo",
    "GibbsState",
    "RunningMoments",
    "ULAInfo",
    "ULAState",
    "block_gibbs",
    "gibbs",
    "gibbs_with_gradients",
    "pool_moments",
    "sample_chains",
    "ula",
    # issue 11: tempering
    "PTInfo",
    "PTState",
    "PTStats",
    "TemperingSummary",
    "adapt_ladder",
    "ladder_from_rejection",
    "parallel_tempering",
    "reset_stats",
    "swap_log_acceptance",
    "swap_permutation",
    "tempered_logdensity",
    "tempering_summary",
    "tune_ladder",
    # issue 11: annealed training
    "AnnealedLangevinResult",
    "NoiseConditionalEnergy",
    "anneal_chains",
    "annealed_langevin",
    "at_noise_level",
    "check_sigmas",
    "geometric_sigmas",
]
