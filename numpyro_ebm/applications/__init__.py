"""Use a trained energy: denoising, anomaly scores, classification, Ising image restoration."""

from numpyro_ebm.applications.denoising import (
    DenoiseResult,
    anomaly_scores,
    auroc,
    class_probabilities,
    denoise,
    denoise_map,
    denoising_logdensity,
    posterior_model,
    predict_min_energy,
    psnr,
    tweedie_denoise,
    wiener_denoise,
)
from numpyro_ebm.applications.restoration import (
    flip_noise,
    flip_noise_strength,
    posterior,
    restoration_model,
    restore_gibbs,
    restore_icm,
    restore_mean_field,
)

__all__ = [
    "DenoiseResult",
    "anomaly_scores",
    "auroc",
    "class_probabilities",
    "denoise",
    "denoise_map",
    "denoising_logdensity",
    "posterior_model",
    "predict_min_energy",
    "psnr",
    "tweedie_denoise",
    "wiener_denoise",
    # restoration
    "flip_noise",
    "flip_noise_strength",
    "posterior",
    "restoration_model",
    "restore_gibbs",
    "restore_icm",
    "restore_mean_field",
]
