"""Data sets: the 2-D toy densities of the EBM literature (exact samplers and densities) and
synthetic sequences from a known hidden Markov model, and a binary test image."""

from numpyro_ebm.datasets.images import binary_test_image
from numpyro_ebm.datasets.sequences import HMM, hmm_bayes_decode, random_hmm, sample_hmm
from numpyro_ebm.datasets.toy import (
    TOY_DENSITIES,
    Checkerboard,
    GaussianMixture2D,
    NoisyCurves,
    Pinwheel,
    Rings,
    checkerboard,
    eight_gaussians,
    entropy,
    pinwheel,
    rings,
    spirals,
    swiss_roll,
    twenty_five_gaussians,
    two_moons,
)

__all__ = [
    "HMM",
    "TOY_DENSITIES",
    "binary_test_image",
    "Checkerboard",
    "GaussianMixture2D",
    "NoisyCurves",
    "Pinwheel",
    "Rings",
    "checkerboard",
    "eight_gaussians",
    "entropy",
    "hmm_bayes_decode",
    "pinwheel",
    "random_hmm",
    "rings",
    "sample_hmm",
    "spirals",
    "swiss_roll",
    "twenty_five_gaussians",
    "two_moons",
]
