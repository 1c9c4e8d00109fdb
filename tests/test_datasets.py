"""Tests of the 2-D toy densities: normalization, agreement of ``log_prob`` with ``sample``, shapes.

Normalization: the midpoint rule on a grid with spacing ``h <= sigma / 2`` (``sigma`` the smallest
noise scale of the density) has an error far below ``1e-6`` for these smooth densities (for a
Gaussian it is ~``exp(-2 pi^2 sigma^2 / h^2)``), the boxes leave out less than ``1e-6`` of the mass,
the curve quadrature errs by < 1e-4 relative, and float32 ``log_prob`` by ~1e-6. Any error in a
normalizing constant (a missing 2 pi, Jacobian or weight) is O(1), so the 1e-3 tolerance can fail.

Sampler vs density: a chi-square test of the histogram of ``N = 100_000`` samples on a 20 x 20
grid of bins against the bin probabilities integrated from ``log_prob``. Under the null,
``X^2 ~ chi^2(df)`` with mean ``df`` and sd ``sqrt(2 df)``; we require ``X^2 < df + 5 sqrt(2 df)``
(about 5 sd). The bin probabilities carry a relative error < 1e-4, i.e. well under one count per bin.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from numpyro.infer.util import log_density

from numpyro_ebm import datasets as ds

# name -> (constructor, half-width L of the box [-L, L]^2, grid points per axis m)
CASES = {
    "eight_gaussians": (ds.eight_gaussians, 5.0, 200),
    "twenty_five_gaussians": (ds.twenty_five_gaussians, 2.0, 400),
    "two_moons": (ds.two_moons, 4.0, 200),
    "rings": (ds.rings, 3.6, 240),
    "checkerboard": (ds.checkerboard, 4.0, 80),
    "checkerboard_smooth": (lambda: ds.checkerboard(noise=0.1), 4.6, 240),
    "swiss_roll": (ds.swiss_roll, 4.0, 200),
    "pinwheel": (ds.pinwheel, 6.0, 240),
    "spirals": (ds.spirals, 4.0, 200),
    # a point mass blurred by the box + Gaussian kernel: checks the jitter kernel cheaply
    "box_kernel": (
        lambda: ds.NoisyCurves(lambda u: jnp.zeros(u.shape + (2,)), 0.05, 0.3, num_panels=1),
        0.8,
        160,
    ),
}
NUM_BINS = 20
NUM_SAMPLES = 100_000


def grid_log_prob(dist, half_width, m):
    """``log_prob`` at the ``m x m`` cell midpoints of ``[-L, L]^2``, float64, and the spacing."""
    h = 2.0 * half_width / m
    ticks = -half_width + h * (np.arange(m) + 0.5)
    grid = np.stack(np.meshgrid(ticks, ticks, indexing="ij"), axis=-1).astype(np.float32)
    rows = 8 if m % 8 == 0 else 1
    f = jax.jit(lambda g: jax.lax.map(dist.log_prob, g.reshape(m // rows, rows, m, 2)))
    return np.asarray(f(jnp.asarray(grid)), dtype=np.float64).reshape(m, m), h


@pytest.mark.parametrize("name", list(CASES))
def test_normalized_and_matches_own_samples(name):
    ctor, half_width, m = CASES[name]
    dist = ctor()
    log_p, h = grid_log_prob(dist, half_width, m)
    density = np.exp(log_p)
    mass = density.sum() * h * h
    assert abs(mass - 1.0) < 1e-3, f"{name}: total mass {mass}"

    # bin probabilities from the density vs histogram of samples
    k = m // NUM_BINS
    p_bins = density.reshape(NUM_BINS, k, NUM_BINS, k).sum(axis=(1, 3)) * h * h
    x = jax.jit(dist.sample, static_argnums=1)(jax.random.PRNGKey(0), (NUM_SAMPLES,))
    x = np.asarray(x, dtype=np.float64)
    assert np.all(np.isfinite(x))
    edges = np.linspace(-half_width, half_width, NUM_BINS + 1)
    counts, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=[edges, edges])
    expected = NUM_SAMPLES * p_bins.ravel()
    observed = counts.ravel()
    keep = expected >= 5
    e, o = list(expected[keep]), list(observed[keep])
    rest_e, rest_o = NUM_SAMPLES - sum(e), NUM_SAMPLES - sum(o)  # small bins + outside the box
    if rest_e >= 5:
        e.append(rest_e)
        o.append(rest_o)
    e, o = np.asarray(e), np.asarray(o)
    chi2 = float(np.sum((o - e) ** 2 / e))
    df = len(e) - 1
    assert chi2 < df + 5.0 * math.sqrt(2.0 * df), f"{name}: chi2 {chi2:.1f} with df {df}"


def test_histogram_test_can_fail():
    """The chi-square check above rejects a density whose noise is 10% off."""
    dist, wrong = ds.eight_gaussians(), ds.eight_gaussians(std=0.9 * 0.5 / math.sqrt(2))
    log_p, h = grid_log_prob(wrong, 5.0, 200)
    p_bins = np.exp(log_p).reshape(20, 10, 20, 10).sum(axis=(1, 3)) * h * h
    x = np.asarray(dist.sample(jax.random.PRNGKey(0), (NUM_SAMPLES,)))
    edges = np.linspace(-5.0, 5.0, 21)
    counts, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=[edges, edges])
    e = NUM_SAMPLES * p_bins.ravel()
    keep = e >= 5
    chi2 = np.sum((counts.ravel()[keep] - e[keep]) ** 2 / e[keep])
    df = keep.sum() - 1
    assert chi2 > df + 5.0 * math.sqrt(2.0 * df)


@pytest.mark.slow
def test_spirals_ffjord_jitter_normalized_and_matches_samples():
    """FFJORD's exact 2spirals generator (box jitter): slow special functions."""
    CASES["spirals_ffjord"] = (lambda: ds.spirals(std=0.1, jitter=1.0 / 12.0), 4.0, 200)
    try:
        test_normalized_and_matches_own_samples("spirals_ffjord")
    finally:
        del CASES["spirals_ffjord"]


@pytest.mark.parametrize("name, panels", [("two_moons", 96), ("swiss_roll", 256), ("spirals", 256)])
def test_curve_quadrature_converged(name, panels):
    """Default quadrature agrees with 4x the panels to 1e-3 nats where p > 1e-6 max p."""
    ctor = ds.TOY_DENSITIES[name]
    key = jax.random.PRNGKey(1)
    sample = jax.jit(ctor().sample, static_argnums=1)
    x = jnp.concatenate(
        [sample(key, (2000,)), jax.random.uniform(key, (2000, 2), minval=-4, maxval=4)]
    )
    ref = np.asarray(jax.jit(ctor(num_panels=panels).log_prob)(x))  # 4x the default panels
    got = np.asarray(jax.jit(ctor().log_prob)(x))
    mask = ref > ref.max() - math.log(1e6)
    assert np.max(np.abs(got - ref)[mask]) < 1e-3


def test_large_batches_are_blocked():
    """Batches above 16384 points take the blocked path of NoisyCurves.log_prob: same values."""
    d = ds.swiss_roll()
    x = jax.random.uniform(jax.random.PRNGKey(7), (20_000, 2), minval=-4, maxval=4)
    blocked = jax.jit(d.log_prob)(x)
    direct = jax.jit(jax.vmap(d.log_prob))(x.reshape(200, 100, 2)).reshape(-1)
    np.testing.assert_allclose(blocked, direct, atol=1e-5)


@pytest.mark.parametrize("name", list(ds.TOY_DENSITIES))
def test_shapes_jit_and_grad(name):
    dist = ds.TOY_DENSITIES[name]()
    assert dist.event_shape == (2,) and dist.batch_shape == ()
    x = jax.jit(dist.sample, static_argnums=1)(jax.random.PRNGKey(2), (3, 4))
    assert x.shape == (3, 4, 2)
    assert jax.eval_shape(dist.log_prob, x).shape == (3, 4)
    assert jax.eval_shape(dist.log_prob, x[0, 0]).shape == ()
    # the distribution is a pytree: it can cross a jit boundary
    lp = jax.jit(lambda d, v: d.log_prob(v))(dist, x)
    assert np.all(np.isfinite(np.asarray(lp)))
    # finite gradients, also at the origin
    v = jnp.concatenate([x.reshape(-1, 2), jnp.zeros((1, 2))])
    g = jax.jit(jax.grad(lambda v: dist.log_prob(v).sum()))(v)
    assert g.shape == v.shape and np.all(np.isfinite(np.asarray(g)))


def test_eight_gaussians_entropy():
    """Quadrature entropy is 2.831 nats; the Monte Carlo helper agrees within 4 standard errors."""
    log_p, h = grid_log_prob(ds.eight_gaussians(), 6.0, 400)
    h_quad = -np.sum(np.exp(log_p) * log_p) * h * h
    assert abs(h_quad - 2.831) < 1e-3
    est, se = ds.entropy(ds.eight_gaussians(), jax.random.PRNGKey(3), num_samples=100_000)
    assert 0 < float(se) < 0.01
    assert abs(float(est) - h_quad) < 4 * float(se)


def test_entropy_non_divisible_batches():
    est, se = ds.entropy(ds.rings(), jax.random.PRNGKey(4), num_samples=1001, batch_size=100)
    assert np.isfinite(float(est)) and float(se) > 0


def test_checkerboard_support():
    d = ds.checkerboard()
    pts = jnp.array([[-3.0, -3.0], [-1.0, -3.0], [1.0, 1.0], [1.0, -1.0], [5.0, 5.0], [3.0, 3.0]])
    lp = np.asarray(d.log_prob(pts))
    on = -math.log(32.0)
    np.testing.assert_allclose(lp[[0, 2, 5]], on, rtol=1e-6)
    assert np.all(np.isneginf(lp[[1, 3, 4]]))
    x = jax.jit(d.sample, static_argnums=1)(jax.random.PRNGKey(5), (20_000,))
    assert bool(jnp.all(d.support(x)))
    assert np.all(np.asarray(jax.jit(d.log_prob)(x)) == np.float32(on))


def test_pinwheel_is_a_volume_preserving_map():
    """log p(x) equals the Gaussian density of the inverse swirl, with Jacobian 1 / scale^2."""
    d = ds.pinwheel(num_arms=1)
    f = jnp.array([[1.2, 0.05], [0.7, -0.1]])

    def forward(f):
        angle = d.rate * jnp.exp(jnp.linalg.norm(f))
        c, s = jnp.cos(-angle), jnp.sin(-angle)
        return d.scale * jnp.array([c * f[0] - s * f[1], s * f[0] + c * f[1]])

    @jax.jit
    @jax.vmap
    def check(fi):
        det = jnp.linalg.det(jax.jacfwd(forward)(fi))
        log_pf = (
            -0.5 * ((fi[0] - 1.0) / 0.3) ** 2
            - 0.5 * (fi[1] / 0.1) ** 2
            - math.log(2 * math.pi * 0.3 * 0.1)
        )
        return d.log_prob(forward(fi)), log_pf - jnp.log(det), det

    got, want, det = check(f)
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(det, 4.0, rtol=1e-5)


def test_in_a_numpyro_model():
    data = ds.two_moons().sample(jax.random.PRNGKey(6), (50,))

    def model(x):
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("x", ds.two_moons(), obs=x)

    lp = jax.jit(lambda x: log_density(model, (x,), {}, {})[0])(data)
    np.testing.assert_allclose(lp, ds.two_moons().log_prob(data).sum(), rtol=1e-5)


def test_toy_densities_registry():
    assert set(ds.TOY_DENSITIES) == {
        "eight_gaussians",
        "twenty_five_gaussians",
        "two_moons",
        "rings",
        "checkerboard",
        "swiss_roll",
        "pinwheel",
        "spirals",
    }
    d = ds.eight_gaussians()
    np.testing.assert_allclose(jnp.linalg.norm(d.locs, axis=-1), 2 * math.sqrt(2), rtol=1e-6)
    np.testing.assert_allclose(d.std, 0.3536, atol=1e-4)


def test_errors():
    with pytest.raises(ValueError, match="std"):
        ds.eight_gaussians(std=-1.0)
    with pytest.raises(ValueError, match="weights"):
        ds.rings(weights=(1.0, -1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="noise"):
        ds.checkerboard(noise=-0.1)
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        ds.eight_gaussians().log_prob(jnp.zeros((4, 3)))
    with pytest.raises(TypeError, match="curves"):
        ds.NoisyCurves("not a curve", 0.1)
    with pytest.raises(ValueError, match="panel_edges"):
        ds.NoisyCurves(lambda u: jnp.stack([u, u], -1), 0.1, panel_edges=[0.0, 0.7, 0.5, 1.0])
