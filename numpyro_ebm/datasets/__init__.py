"""Data sets: the 2-D toy densities of the EBM literature (exact samplers and densities; by
family in :mod:`.mixtures`, :mod:`.curves`, :mod:`.shapes`, with the registry
:data:`TOY_DENSITIES` and :func:`entropy` in :mod:`.toy`), synthetic sequences from a known
hidden Markov model (:mod:`.sequences`) and a binary test image (:mod:`.images`)."""

from numpyro_ebm.datasets.curves import NoisyCurves, spirals, swiss_roll, two_moons
from numpyro_ebm.datasets.images import binary_test_image
from numpyro_ebm.datasets.mixtures import (
    GaussianMixture2D,
    Rings,
    eight_gaussians,
    rings,
    twenty_five_gaussians,
)
from numpyro_ebm.datasets.sequences import HMM, hmm_bayes_decode, random_hmm, sample_hmm
from numpyro_ebm.datasets.shapes import Checkerboard, Pinwheel, checkerboard, pinwheel
from numpyro_ebm.datasets.toy import TOY_DENSITIES, entropy

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
