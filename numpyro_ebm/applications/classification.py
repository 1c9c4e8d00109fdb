r"""Classification with class energies.

Given a table of class energies :math:`E(k, x)`, shape ``(..., K)`` (for a label EBM, see
:func:`numpyro_ebm.label_energies`), the class posterior is a softmax of negative energies,

.. math:: p(k \mid x) = \frac{e^{-E(k, x)}}{\sum_j e^{-E(j, x)}},

and the Bayes classifier picks the minimum-energy class.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["class_probabilities", "predict_min_energy"]


def predict_min_energy(energies):
    r"""Minimum-energy class :math:`\hat y = \arg\min_k E(k, x)`: ``(..., K) -> (...)``.

    Example::

        predict_min_energy(jnp.array([[1.0, 0.0, 2.0]]))   # Array([1])
    """
    return jnp.argmin(jnp.asarray(energies), axis=-1)


def class_probabilities(energies):
    r""":math:`p(k \mid x) = \mathrm{softmax}_k(-E(k, x))`: ``(..., K) -> (..., K)``.

    Example::

        class_probabilities(jnp.array([0.0, 0.0]))   # Array([0.5, 0.5])
    """
    return jax.nn.softmax(-jnp.asarray(energies), axis=-1)
