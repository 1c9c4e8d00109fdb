"""Use a trained energy: denoising, anomaly scores, classification."""

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
]
