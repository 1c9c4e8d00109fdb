r"""Anomaly detection with a trained energy.

A likelihood ratio needs no partition function,

.. math:: \frac{p(x_1)}{p(x_2)} = e^{E(x_2) - E(x_1)},

so the energy alone ranks points by likelihood: :func:`anomaly_scores` (higher = more
anomalous). Score the ranking with :func:`numpyro_ebm.evaluation.auroc`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp

from numpyro_ebm._validation import check_finite

__all__ = ["anomaly_scores"]


def anomaly_scores(energy_fn: Callable, x):
    r"""Anomaly scores: the energies :math:`E(x)`, shape ``(...)`` for ``x`` ``(..., D)``.

    Higher energy = lower (unnormalized) density = more anomalous. The unknown :math:`\log Z` is
    a common shift, so it changes no ranking (and no AUROC).

    :param energy_fn: the energy, ``(..., D) -> (...)`` (for a trained model,
        ``functools.partial(numpyro_ebm.energy_fn(model, "x"), params)``).
    :param x: ``(..., D)`` points to score.
    :return: ``(...)`` scores.

    Example::

        scores_in = anomaly_scores(energy_fn, inliers)     # (n,)
        scores_out = anomaly_scores(energy_fn, outliers)   # (m,)
        numpyro_ebm.evaluation.auroc(scores_in, scores_out)
    """
    x = jnp.asarray(x)
    check_finite("x", x)
    return energy_fn(x)
