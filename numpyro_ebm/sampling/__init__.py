"""Samplers: BlackJAX-shaped kernels (one algorithm per module) and the many-chain driver."""

from numpyro_ebm.sampling.annealed_langevin import (
    AnnealedLangevinResult,
    NoiseConditionalEnergy,
    anneal_chains,
    annealed_langevin,
    at_noise_level,
    check_sigmas,
    geometric_sigmas,
)
from numpyro_ebm.sampling.block_gibbs import BlockGibbsState, block_gibbs
from numpyro_ebm.sampling.cftp import ising_cftp
from numpyro_ebm.sampling.chains import ChainResult, RunningMoments, pool_moments, sample_chains
from numpyro_ebm.sampling.clamp import clamp, clamped_block_gibbs, clamped_kernel, embed
from numpyro_ebm.sampling.discrete import GibbsInfo
from numpyro_ebm.sampling.discrete_langevin import (
    DiscreteLangevinInfo,
    DiscreteLangevinState,
    discrete_langevin,
)
from numpyro_ebm.sampling.distributed import (
    chain_sharding,
    chains_from_local,
    gather,
    replicate,
    shard_chains,
)
from numpyro_ebm.sampling.ebm_gibbs import (
    EBMGibbs,
    EBMSiteGibbs,
    EBMSiteGibbsState,
    discrete_ebm_sites,
    discrete_gibbs_sites,
)
from numpyro_ebm.sampling.exchange import ExchangeKernel, ExchangeState, enumeration_sampler
from numpyro_ebm.sampling.gibbs import GibbsState, gibbs
from numpyro_ebm.sampling.gibbs_with_gradients import GWGInfo, GWGState, gibbs_with_gradients
from numpyro_ebm.sampling.langevin import ULAInfo, ULAState, ula
from numpyro_ebm.sampling.mala import MALAInfo, MALAState, mala
from numpyro_ebm.sampling.metropolised_block import metropolised_block_step
from numpyro_ebm.sampling.numpyro_kernel import BlackJAXKernel, BlackJAXKernelState
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

__all__ = [
    "BlackJAXKernel",
    "BlackJAXKernelState",
    "BlockGibbsState",
    "ChainResult",
    "ExchangeKernel",
    "ExchangeState",
    "GWGInfo",
    "GWGState",
    "GibbsInfo",
    "GibbsState",
    "RunningMoments",
    "MALAInfo",
    "MALAState",
    "ULAInfo",
    "ULAState",
    "block_gibbs",
    "enumeration_sampler",
    "gibbs",
    "gibbs_with_gradients",
    "ising_cftp",
    "mala",
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
    # issue 14: chains as global arrays over several processes
    "chain_sharding",
    "chains_from_local",
    "gather",
    "replicate",
    "shard_chains",
    # issue 12: discrete EBM sites in MCMC, clamped sampling
    "DiscreteLangevinInfo",
    "DiscreteLangevinState",
    "EBMGibbs",
    "EBMSiteGibbs",
    "EBMSiteGibbsState",
    "discrete_ebm_sites",
    "discrete_gibbs_sites",
    "discrete_langevin",
    "metropolised_block_step",
    "clamp",
    "clamped_block_gibbs",
    "clamped_kernel",
    "embed",
    # issue 11: annealed training
    "AnnealedLangevinResult",
    "NoiseConditionalEnergy",
    "anneal_chains",
    "annealed_langevin",
    "at_noise_level",
    "check_sigmas",
    "geometric_sigmas",
]
