"""Classical energy-based models: Ising, RBM, DBM, products of experts, exponential families, CRFs."""

from numpyro_ebm.models.crf import (
    LinearChainCRF,
    crf_energy,
    crf_log_partition,
    crf_marginals,
    viterbi,
)
from numpyro_ebm.models.dbm import DBM, DBMFitResult, DBMState
from numpyro_ebm.models.expfam import ExponentialFamily, MomentMatchingResult, gaussian_statistics
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
    RBMGibbsInfo,
    RBMGibbsState,
    bernoulli_base,
)

__all__ = [
    "DBM",
    "DBMFitResult",
    "DBMState",
    "ExponentialFamily",
    "GaussianBernoulliRBM",
    "LinearChainCRF",
    "MomentMatchingResult",
    "ProductOfExperts",
    "RBM",
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
