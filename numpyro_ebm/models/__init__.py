"""Classical energy-based models: the Ising model (and, from other modules, RBMs, DBMs, ...)."""

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

__all__ = [
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
