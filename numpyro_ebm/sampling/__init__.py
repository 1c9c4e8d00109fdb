"""Samplers: BlackJAX-shaped kernels and the many-chain driver."""

from numpyro_ebm.sampling.chains import ChainResult, sample_chains
from numpyro_ebm.sampling.gibbs import (
    BlockGibbsState,
    GibbsInfo,
    GibbsState,
    GWGInfo,
    GWGState,
    block_gibbs,
    gibbs,
    gibbs_with_gradients,
)
from numpyro_ebm.sampling.langevin import ULAInfo, ULAState, ula
from numpyro_ebm.sampling.numpyro_kernel import BlackJAXKernel, BlackJAXKernelState

__all__ = [
    "BlockGibbsState",
    "GibbsInfo",
    "GibbsState",
    "GWGInfo",
    "GWGState",
    "block_gibbs",
    "gibbs",
    "gibbs_with_gradients",
    "BlackJAXKernel",
    "BlackJAXKernelState",
    "ChainResult", "ULAInfo", "ULAState", "sample_chains", "ula"]
