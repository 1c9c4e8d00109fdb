"""Classical energy-based models: Ising, RBM, DBM, products of experts, exponential families, CRFs."""

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
from numpyro_ebm.models.ising import (
    Ising,
    binary_test_image,
    critical_beta,
    flip_noise,
    flip_noise_strength,
    onsager_energy_per_site,
    onsager_magnetization,
    posterior,
    restoration_model,
    restore_gibbs,
    restore_icm,
    restore_mean_field,
    spin,
)
from numpyro_ebm.models.product import ProductOfExperts, as_energy, gaussian_product
from numpyro_ebm.models.rbm import (
    RBM,
    GaussianBernoulliRBM,
    RBMBase,
    RBMGibbsInfo,
    RBMGibbsState,
    bernoulli_base,
)

__all__ = [
    "DBM",
    "DBMState",
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
    "binary_test_image",
    "critical_beta",
    "flip_noise",
    "flip_noise_strength",
    "onsager_energy_per_site",
    "onsager_magnetization",
    "posterior",
    "restoration_model",
    "restore_gibbs",
    "restore_icm",
    "restore_mean_field",
    "spin",
]
