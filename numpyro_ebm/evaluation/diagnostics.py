r"""Diagnostics and metrics: sample quality of EBM samplers (maximum mean discrepancy, ESS per
second) and the metrics of the applications (PSNR of a restoration, AUROC of anomaly scores)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.diagnostics import effective_sample_size

from numpyro_ebm._validation import check_finite, check_positive

__all__ = ["auroc", "ess_per_second", "median_bandwidth", "mmd", "psnr"]


def _flatten(x, name):
    x = jnp.asarray(x)
    if x.ndim < 1 or x.shape[0] < 2:
        raise ValueError(f"`{name}` must have shape (num_points >= 2, ...), got {x.shape}.")
    check_finite(name, x)
    return x.reshape(x.shape[0], -1)


def _sq_dists(a, b):
    return jnp.maximum(
        jnp.sum(a**2, -1)[:, None] + jnp.sum(b**2, -1)[None, :] - 2.0 * a @ b.T, 0.0
    )


def median_bandwidth(x, y):
    """The median heuristic: the median pairwise distance of the pooled points."""
    z = jnp.concatenate([_flatten(x, "x"), _flatten(y, "y")])
    d = jnp.sqrt(_sq_dists(z, z))
    return jnp.median(d[jnp.triu_indices(z.shape[0], 1)])


def mmd(x, y, bandwidth=None):
    r"""Unbiased squared maximum mean discrepancy with a Gaussian kernel.

    .. math::

        \widehat{\mathrm{MMD}}^2 = \frac{1}{m(m-1)}\sum_{i\ne j} k(x_i,x_j)
        + \frac{1}{n(n-1)}\sum_{i\ne j} k(y_i,y_j) - \frac{2}{mn}\sum_{i,j} k(x_i,y_j),
        \qquad k(a,b) = \exp\!\left(-\frac{\|a-b\|^2}{2h^2}\right)

    :param x: ``(m, ...)`` samples (e.g. from an EBM sampler).
    :param y: ``(n, ...)`` samples (e.g. held-out data).
    :param bandwidth: kernel width ``h`` (scalar or a sequence, whose kernels are summed);
        ``None`` uses the median heuristic.
    :return: a scalar; about 0 when x and y come from the same distribution (it can be slightly
        negative, being unbiased).

    Example::

        mmd(result.samples[-1], held_out)   # (num_chains, D) vs (n, D): ≈ 0 when they match
    """
    x, y = _flatten(x, "x"), _flatten(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"`x` and `y` must have the same event size, got {x.shape} and {y.shape}.")
    if bandwidth is not None:
        check_finite("bandwidth", bandwidth)
        check_positive("bandwidth", bandwidth)
    h = median_bandwidth(x, y) if bandwidth is None else jnp.asarray(bandwidth, x.dtype)
    h = jnp.atleast_1d(h)

    def k(a, b):
        d2 = _sq_dists(a, b)
        return jnp.exp(-d2[..., None] / (2.0 * h**2)).sum(-1)

    m, n = x.shape[0], y.shape[0]
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    sxx = (kxx.sum() - jnp.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - jnp.trace(kyy)) / (n * (n - 1))
    return sxx + syy - 2.0 * kxy.mean()


def ess_per_second(samples, seconds):
    """Effective sample size per second of wall time, per coordinate.

    :param samples: ``(num_samples, num_chains, ...)``, draws first, as in
        ``ChainResult.samples`` from :func:`~numpyro_ebm.sample_chains`.
    :param float seconds: the wall time that produced them.
    :return: ``(...)`` array: the bulk ESS (NumPyro's estimator over all chains) divided by seconds.

    Example::

        t0 = time.perf_counter()
        result = jax.block_until_ready(sample_chains(rng_key, logdensity_fn, kernel, x0, 1000, 500))
        ess_per_second(result.samples, time.perf_counter() - t0)   # (D,)
    """
    if not seconds > 0:
        raise ValueError(f"`seconds` must be > 0, got {seconds!r}.")
    s = np.asarray(jax.device_get(samples))
    if s.ndim < 2:
        raise ValueError(f"`samples` must have shape (num_samples, num_chains, ...), got {s.shape}.")
    ess = effective_sample_size(np.swapaxes(s, 0, 1))  # numpyro wants (chains, draws, ...)
    return ess / seconds


# --------------------------------------------------------------------------------------------
# metrics of the applications (numpyro_ebm.applications)


def psnr(estimate, reference, data_range: float = 1.0, axis=-1):
    r"""Peak signal-to-noise ratio in dB, :math:`10\log_{10}(R^2 / \mathrm{MSE})`.

    :param estimate: ``(..., D)``.
    :param reference: the clean signal, same shape.
    :param data_range: :math:`R`, the peak value (1 for images in [0, 1]).
    :param axis: axes the MSE averages over: ``-1`` (default) gives one PSNR per image, shape
        ``(...)`` (report their mean); ``None`` pools every pixel into one MSE (scikit-image's
        ``peak_signal_noise_ratio``).
    :return: ``(...)`` PSNR in dB (a scalar with ``axis=None``).

    Example::

        psnr(jnp.full((2, 4), 0.1), jnp.zeros((2, 4)))   # MSE 0.01: Array([20., 20.])
    """
    estimate, reference = jnp.asarray(estimate), jnp.asarray(reference)
    if estimate.shape != reference.shape:
        raise ValueError(
            f"psnr: `estimate` {estimate.shape} and `reference` {reference.shape} must have the "
            "same shape."
        )
    mse = jnp.mean((estimate - reference) ** 2, axis=axis)
    return 10.0 * jnp.log10(data_range**2 / mse)


def auroc(scores_normal, scores_anomalous):
    r"""Area under the ROC curve for "anomalous scores higher".

    .. math:: \mathrm{AUROC} = P(s_a > s_n) + \tfrac12 P(s_a = s_n)

    (the Mann-Whitney statistic), by sorting: ``O((n + m) log n)``.

    :param scores_normal: ``(n,)`` scores of normal points.
    :param scores_anomalous: ``(m,)`` scores of anomalies.
    :return: scalar in [0, 1]; 0.5 is chance.

    Example::

        auroc(anomaly_scores(energy_fn, inliers), anomaly_scores(energy_fn, outliers))
        auroc([0.0, 1.0], [2.0, 3.0])   # 1.0: every anomaly scores above every normal point
    """
    normal = jnp.sort(jnp.ravel(jnp.asarray(scores_normal)))
    anomalous = jnp.ravel(jnp.asarray(scores_anomalous))
    if normal.size == 0 or anomalous.size == 0:
        raise ValueError("auroc: `scores_normal` and `scores_anomalous` must be non-empty.")
    check_finite("scores_normal", normal)
    check_finite("scores_anomalous", anomalous)
    below = jnp.searchsorted(normal, anomalous, side="left")
    below_or_equal = jnp.searchsorted(normal, anomalous, side="right")
    wins = below + 0.5 * (below_or_equal - below)
    return jnp.sum(wins) / (normal.size * anomalous.size)
