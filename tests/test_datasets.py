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
import numpyro.distributions as dist
import optax
import pytest
from numpyro.distributions.util import log1mexp
from numpyro.infer.util import log_density
from scipy.special import logsumexp as sp_logsumexp

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
    est, se = ds.entropy(ds.rings(), jax.random.PRNGKey(4), num_samples=1001, chunk_size=100)
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


# ------------------------------------------------------------------------------------------
# the layout of 0.2: families in their own modules, NumPyro / optax numerics instead of copies


def test_public_names_by_family():
    from numpyro_ebm.datasets import curves, mixtures, shapes, toy

    assert ds.GaussianMixture2D is mixtures.GaussianMixture2D and ds.rings is mixtures.rings
    assert ds.NoisyCurves is curves.NoisyCurves and ds.spirals is curves.spirals
    assert ds.Checkerboard is shapes.Checkerboard and ds.pinwheel is shapes.pinwheel
    assert ds.TOY_DENSITIES is toy.TOY_DENSITIES and ds.entropy is toy.entropy
    for name in toy.__all__:  # the registry and entropy, re-exported by the package
        assert getattr(toy, name) is getattr(ds, name)


@pytest.mark.parametrize(
    "weights", [None, (1.0, 2.0, 0.5, 0.0, 1.0, 1.0, 3.0, 1.0)], ids=["uniform", "weighted"]
)
def test_gaussian_mixture_is_mixture_same_family_with_exact_log_prob(weights):
    """GaussianMixture2D is NumPyro's MixtureSameFamily, and log_prob is exactly the log-sum-exp
    of the weighted isotropic Gaussian components (float64 reference); zero weights are allowed
    and give finite gradients."""
    locs = np.asarray(ds.eight_gaussians().locs, dtype=np.float64)
    std = 0.3
    d = ds.GaussianMixture2D(locs, std, weights)
    assert isinstance(d, ds.GaussianMixture2D) and isinstance(d, dist.MixtureSameFamily)
    assert d.event_shape == (2,) and d.batch_shape == () and d.mixture_size == 8
    w = np.full(8, 1 / 8) if weights is None else np.asarray(weights) / np.sum(weights)
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (500, 2)) * 2.5, dtype=np.float64)
    d2 = np.sum((x[:, None, :] - locs) ** 2, -1)
    with np.errstate(divide="ignore"):
        comp = np.log(w) - 0.5 * d2 / std**2 - np.log(2 * np.pi * std**2)
    want = sp_logsumexp(comp, axis=-1)
    np.testing.assert_allclose(d.log_prob(jnp.asarray(x, jnp.float32)), want, rtol=1e-5, atol=1e-5)
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(d.log_weights, np.log(w), rtol=1e-5)  # -inf for weight 0
    np.testing.assert_allclose(d.mean, w @ locs, atol=1e-5)
    np.testing.assert_allclose(d.std, std, rtol=1e-7)
    g = jax.grad(lambda v: d.log_prob(v).sum())(jnp.asarray(x, jnp.float32))
    assert np.all(np.isfinite(np.asarray(g)))
    if weights is not None:  # the component of weight 0 is never drawn
        comps = np.argmin(
            np.sum((np.asarray(d.sample(jax.random.PRNGKey(1), (4000,)))[:, None] - locs) ** 2, -1),
            -1,
        )
        assert not np.any(comps == 3)
    with pytest.raises(ValueError, match="locs"):
        ds.GaussianMixture2D(np.zeros((3, 3)), 0.1)


def test_log1mexp_replacement_identical_on_a_grid():
    """NumPyro's log1mexp equals the former hand-written one (Maechler's two branches) on both
    sides of the -log 2 switch, values bit-identical in float32."""

    def old(z):
        return jnp.where(z > -math.log(2.0), jnp.log(-jnp.expm1(z)), jnp.log1p(-jnp.exp(z)))

    z = -jnp.concatenate(
        [jnp.logspace(-8, 2, 2001), jnp.array([math.log(2.0), 0.6931472, 0.69314718, 1e3])]
    ).astype(jnp.float32)
    assert np.any(np.asarray(z) > -math.log(2)) and np.any(np.asarray(z) < -math.log(2))
    np.testing.assert_array_equal(log1mexp(z), old(z))
    # gradients: equal where the old one was finite; NumPyro's custom JVP is also finite near 0,
    # where the untaken branch of the old `where` gave NaN
    g_new = np.asarray(jax.vmap(jax.grad(log1mexp))(z))
    g_old = np.asarray(jax.vmap(jax.grad(old))(z))
    assert np.all(np.isfinite(g_new))
    ok = np.isfinite(g_old)
    assert ok.mean() > 0.9
    np.testing.assert_allclose(g_new[ok], g_old[ok], rtol=1e-6)


def test_safe_norm_replacement_matches_on_a_grid():
    """optax.safe_norm(x, 0) equals the former hand-written norm (to float rounding) with the
    same gradient, and its gradient at the origin is 0 (not NaN), as the Rings/Pinwheel
    densities need (test_shapes_jit_and_grad differentiates at the origin)."""

    def old(x):
        sq = jnp.sum(x**2, axis=-1)
        positive = sq > 0
        return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)

    def new(x):
        return optax.safe_norm(x, 0.0, axis=-1)

    x = jax.random.normal(jax.random.PRNGKey(0), (1000, 2)) * jnp.logspace(-15, 15, 1000)[:, None]
    x = jnp.concatenate([x, jnp.zeros((1, 2))])
    np.testing.assert_allclose(new(x), old(x), rtol=1e-6)
    np.testing.assert_allclose(
        jax.vmap(jax.grad(new))(x), jax.vmap(jax.grad(old))(x), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_array_equal(jax.grad(new)(jnp.zeros(2)), [0.0, 0.0])


@pytest.mark.parametrize("name", list(ds.TOY_DENSITIES))
def test_sample_argument_errors(name):
    d = ds.TOY_DENSITIES[name]()
    with pytest.raises(TypeError, match="`key`.*PRNG key"):
        d.sample(0, (3,))
    with pytest.raises(ValueError, match="sample_shape"):
        d.sample(jax.random.PRNGKey(0), (-1,))
    with pytest.raises(TypeError, match="sample_shape"):
        d.sample(jax.random.PRNGKey(0), (2.5,))
    with pytest.raises(TypeError, match="sample_shape"):
        d.sample(jax.random.PRNGKey(0), 5)
    assert d.sample(jax.random.key(0), [2, 0]).shape == (2, 0, 2)  # lists and zeros are fine


def test_entropy_argument_errors():
    with pytest.raises(TypeError, match="rng_key"):
        ds.entropy(ds.rings(), 0)
    with pytest.raises(ValueError, match="chunk_size"):
        ds.entropy(ds.rings(), jax.random.PRNGKey(0), num_samples=10, chunk_size=0)
