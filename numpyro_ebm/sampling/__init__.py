"""Samplers: BlackJAX-shaped kernels and the many-chain driver."""

from numpyro_ebm.sampling.chains import ChainResult, sample_chains
from numpyro_ebm.sampling.langevin import ULAInfo, ULAState, ula

__all__ = ["ChainResult", "ULAInfo", "ULAState", "sample_chains", "ula"]
