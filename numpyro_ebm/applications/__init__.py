"""Use a trained energy: denoising (:mod:`.denoising`), anomaly scores (:mod:`.anomaly`),
classification (:mod:`.classification`), Ising image restoration (:mod:`.restoration`). The
metrics (``psnr``, ``auroc``) live in :mod:`numpyro_ebm.evaluation`."""

from numpyro_ebm.applications.anomaly import anomaly_scores
from numpyro_ebm.applications.classification import class_probabilities, predict_min_energy
from numpyro_ebm.applications.denoising import (
    DenoiseResult,
    denoise,
    denoise_map,
    denoising_logdensity,
    posterior_model,
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
    "class_probabilities",
    "denoise",
    "denoise_map",
    "denoising_logdensity",
    "posterior_model",
    "predict_min_energy",
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
