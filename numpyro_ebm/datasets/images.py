"""Small synthetic images (deterministic, no download)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from numpyro_ebm._validation import check_int

__all__ = ["binary_test_image"]


def binary_test_image(size: int = 64):
    """A deterministic binary test image, spins of shape ``(size, size)`` (+1 = foreground):
    a filled rectangle, a disk, a ring and a triangle on a -1 background.

    :param int size: side length, at least 8.
    :return: float32 array ``(size, size)`` with values in {-1, +1}.

    **Example**: ``noisy = flip_noise(jax.random.key(0), binary_test_image(64), 0.15)``.
    """
    size = check_int("size", size, 8)
    i, j = np.mgrid[0:size, 0:size] / size
    img = (0.08 < i) & (i < 0.42) & (0.08 < j) & (j < 0.38)  # rectangle
    img |= (i - 0.27) ** 2 + (j - 0.72) ** 2 < 0.17**2  # disk
    r2 = (i - 0.72) ** 2 + (j - 0.27) ** 2
    img |= (0.09**2 < r2) & (r2 < 0.18**2)  # ring
    img |= (i > 0.55) & (i < 0.92) & (j > 0.55) & (j - 0.55 < (i - 0.55))  # triangle
    return jnp.asarray(np.where(img, 1.0, -1.0), jnp.float32)
