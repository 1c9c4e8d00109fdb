"""Classical energy-based models: Ising, RBM, DBM, products of experts, exponential families, CRFs."""

from numpyro_ebm.models.base import EnergyModel
from numpyro_ebm.models.crf import (
    LinearChainCRF,
    LinearChainCRFModel,
    crf_energy,
    crf_log_partition,
    crf_marginals,
    viterbi,
)
from numpyro_ebm.models.dbm import DBM, DBMState
from numpyro_ebm.models.expfam import ExponentialFamily, gaussian_statistics
from numpyro_ebm.models.graph import GraphIsing, Potts, graph_colouring, lattice_adjacency
from numpyro_ebm.models.ising import Ising, spin
from numpyro_ebm.models.product import ProductOfExperts, as_energy, gaussian_product
from numpyro_ebm.models.rbm import (
    RBM,
    GaussianBernoulliRBM,
    RBMBase,
    RBMGibbsInfo,
    RBMGibbsState,
    bernoulli_base,
)
from numpyro_ebm.models.references import (
    critical_beta,
    onsager_energy_per_site,
    onsager_magnetization,
)

__all__ = [
    "DBM",
    "DBMState",
    "EnergyModel",
    "ExponentialFamily",
    "GaussianBernoulliRBM",
    "LinearChainCRF",
    "LinearChainCRFModel",
    "ProductOfExperts",
    "RBM",
    "RBMBase",
    "RBMGibbsInfo",
    "RBMGibbsState",
    "as_energy",
    "bernoulli_base",
    "crf_energy",
    "crf_log_partition",
    "crf_marginals",
    "gaussian_product",
    "gaussian_statistics",
    "viterbi",
    "Ising",
    "critical_beta",
    "onsager_energy_per_site",
    "onsager_magnetization",
    "spin",
    # issue 12: discrete models on graphs
    "GraphIsing",
    "Potts",
    "graph_colouring",
    "lattice_adjacency",
]
