"""Tests of logz_quadrature and logz_exact against closed-form partition functions.

Quadrature: the trapezoid rule on a box holding all but ~1e-20 of the mass, with spacing
``h <= sigma / 4``, errs by far less than float32 round-off, so ``1e-4`` (absolute, on log Z of
order 1) is a float32 tolerance that still catches any error in the weights (an end-point weight
off by ``h/2`` shifts log Z by ~``1e-3``; a missing Jacobian by O(1)).
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpyro_ebm import datasets as ds
from numpyro_ebm.evaluation.partition import logz_exact, logz_quadrature


# ---------------------------------------------------------------------------------------------
# logz_quadrature
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "energy",
    [
        lambda x: 0.5 * ((x - 1.0) / 0.3) ** 2,  # elementwise: (n, 1) -> (n, 1)
        lambda x: 0.5 * jnp.sum(((x - 1.0) / 0.3) ** 2, axis=-1),  # (n, 1) -> (n,)
    ],
    ids=["elementwise", "last-axis"],
)
def test_gaussian_1d(energy):
    got = logz_quadrature(energy, -4.0, 6.0)
    assert got.shape == ()
    np.testing.assert_allclose(got, 0.5 * math.log(2 * math.pi * 0.3**2), atol=1e-4)


def test_gaussian_2d_correlated():
    cov = np.array([[1.0, 0.8], [0.8, 1.5]])
    prec = jnp.asarray(np.linalg.inv(cov), dtype=jnp.float32)
    energy = lambda x: 0.5 * jnp.einsum("...i,ij,...j->...", x, prec, x)
    want = math.log(2 * math.pi) + 0.5 * math.log(np.linalg.det(cov))
    np.testing.assert_allclose(logz_quadrature(energy, -9.0, 9.0, dim=2), want, atol=1e-4)
    # per-dimension bounds infer dim=2; a shifted energy moves nothing
    shifted = lambda x: energy(x - jnp.array([1.0, -2.0]))
    got = logz_quadrature(shifted, jnp.array([-8.0, -11.0]), jnp.array([10.0, 7.0]))
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_mixture_with_constant_offset():
    """E = -log p(x) - c for a bimodal normalized p: log Z = c."""

    def energy(x):
        x = x[..., 0]
        log_p = jnp.logaddexp(
            math.log(0.3) - 0.5 * ((x + 2.0) / 0.5) ** 2 - math.log(0.5 * math.sqrt(2 * math.pi)),
            math.log(0.7) - 0.5 * (x - 3.0) ** 2 - math.log(math.sqrt(2 * math.pi)),
        )
        return -log_p - 1.7

    np.testing.assert_allclose(logz_quadrature(energy, -8.0, 10.0, num_points=2048), 1.7, atol=1e-4)


@pytest.mark.parametrize("name, half_width", [("eight_gaussians", 6.0), ("pinwheel", 6.5)])
def test_toy_density_is_normalized(name, half_width):
    dist = ds.TOY_DENSITIES[name]()
    got = logz_quadrature(lambda x: -dist.log_prob(x), -half_width, half_width, 512, dim=2)
    np.testing.assert_allclose(got, 0.0, atol=1e-4)


def test_chunking_does_not_change_the_result():
    energy = lambda x: 0.5 * jnp.sum(x**2, -1) + 0.3 * jnp.sin(3 * x[..., 0])
    a = logz_quadrature(energy, -7.0, 7.0, 300, dim=2)
    b = logz_quadrature(energy, -7.0, 7.0, 300, dim=2, chunk_size=7_777)  # 90000 = 11 * 7777 + ...
    np.testing.assert_allclose(a, b, atol=2e-6)


def test_jit_and_grad_in_energy_parameters():
    """d log Z / d sigma = 1 / sigma for E = x^2 / (2 sigma^2) in 1-D (= 2 / sigma in 2-D)."""

    def logz(sigma, dim):
        return logz_quadrature(lambda x: 0.5 * jnp.sum(x**2, -1) / sigma**2, -8.0, 8.0, dim=dim)

    f = jax.jit(jax.value_and_grad(logz), static_argnums=1)
    value, grad = f(0.7, 1)
    np.testing.assert_allclose(value, 0.5 * math.log(2 * math.pi * 0.49), atol=1e-4)
    np.testing.assert_allclose(grad, 1 / 0.7, rtol=1e-4)
    _, grad2 = f(0.7, 2)
    np.testing.assert_allclose(grad2, 2 / 0.7, rtol=1e-4)
    # traced bounds are allowed too (checks are skipped under jit)
    traced = jax.jit(lambda lo: logz_quadrature(lambda x: 0.5 * x**2, lo, -lo))(-9.0)
    np.testing.assert_allclose(traced, 0.5 * math.log(2 * math.pi), atol=1e-4)


def test_quadrature_errors():
    e = lambda x: 0.5 * jnp.sum(x**2, -1)
    with pytest.raises(ValueError, match="low < high"):
        logz_quadrature(e, 1.0, -1.0)
    with pytest.raises(ValueError, match="low < high"):
        logz_quadrature(e, jnp.array([-1.0, 2.0]), jnp.array([1.0, 1.0]))
    with pytest.raises(ValueError, match="finite"):
        logz_quadrature(e, -jnp.inf, 1.0)
    with pytest.raises(ValueError, match="num_points"):
        logz_quadrature(e, -1.0, 1.0, num_points=1)
    with pytest.raises(TypeError, match="num_points"):
        logz_quadrature(e, -1.0, 1.0, num_points=10.0)
    with pytest.raises(ValueError, match="logz_ais"):
        logz_quadrature(e, -1.0, 1.0, dim=3)
    with pytest.raises(ValueError, match="logz_ais"):
        logz_quadrature(e, jnp.zeros(3), jnp.ones(3))
    with pytest.raises(ValueError, match="dim=2"):
        logz_quadrature(e, jnp.zeros(3), 1.0, dim=2)
    with pytest.raises(ValueError, match="energies"):
        logz_quadrature(lambda x: 0.5 * x**2, -1.0, 1.0, dim=2)  # (n, 2) -> (n, 2)
    with pytest.raises(TypeError, match="callable"):
        logz_quadrature("E", -1.0, 1.0)


# ---------------------------------------------------------------------------------------------
# logz_exact
# ---------------------------------------------------------------------------------------------
def test_independent_spins():
    """E = -h.s over s in {-1, 1}^n: log Z = sum_i log(2 cosh h_i)."""
    h = jax.random.normal(jax.random.PRNGKey(0), (12,))
    got = logz_exact(lambda s: -s @ h, 12, values=(-1, 1), chunk_size=1000)
    assert got.shape == ()
    np.testing.assert_allclose(got, jnp.sum(jnp.log(2 * jnp.cosh(h))), rtol=1e-5)


def test_independent_bernoulli_and_three_states():
    a = jnp.array([0.5, -1.0, 2.0, 0.1, -0.3])
    np.testing.assert_allclose(
        logz_exact(lambda v: -v @ a, 5), jnp.sum(jnp.log1p(jnp.exp(a))), rtol=1e-5
    )
    # three states per unit: log Z = sum_i logsumexp_v (a_i v)
    vals = jnp.array([-1.0, 0.0, 2.5])
    want = jnp.sum(jax.nn.logsumexp(a[:, None] * vals, axis=-1))
    np.testing.assert_allclose(logz_exact(lambda v: -v @ a, 5, values=vals), want, rtol=1e-5)


def ising_chain_energy(beta_j):
    return lambda s: -beta_j * jnp.sum(s * jnp.roll(s, 1, axis=-1), axis=-1)


def ising_chain_logz(beta_j, n):
    """Periodic chain, h = 0: Z = (2 cosh bJ)^n + (2 sinh bJ)^n (transfer matrix eigenvalues)."""
    return n * math.log(2 * math.cosh(beta_j)) + math.log1p(math.tanh(beta_j) ** n)


@pytest.mark.parametrize("beta_j, n", [(0.7, 10), (-0.4, 9), (1.3, 20)])
def test_ising_chain_periodic(beta_j, n):
    got = logz_exact(ising_chain_energy(beta_j), n, values=(-1, 1), chunk_size=4096)
    np.testing.assert_allclose(got, ising_chain_logz(beta_j, n), rtol=1e-5)


def test_ising_chain_2_pow_24_configurations():
    """16.7M configurations in bounded memory (256 chunks of 65536)."""
    got = logz_exact(ising_chain_energy(0.7), 24, values=(-1, 1))
    np.testing.assert_allclose(got, ising_chain_logz(0.7, 24), rtol=1e-5)


def test_exact_jit_and_grad():
    """d log Z / d h_i = E[s_i] = tanh(h_i) for independent spins."""
    h = jnp.array([0.3, -0.8, 1.1])
    g = jax.jit(jax.grad(lambda h: logz_exact(lambda s: -s @ h, 3, values=(-1, 1))))(h)
    np.testing.assert_allclose(g, jnp.tanh(h), rtol=1e-5)


def test_exact_errors():
    e = lambda s: jnp.sum(s, -1)
    with pytest.raises(ValueError, match="logz_ais"):
        logz_exact(e, 31)
    with pytest.raises(ValueError, match="logz_ais"):
        logz_exact(e, 20, values=(0, 1, 2))
    with pytest.raises(ValueError, match="num_units"):
        logz_exact(e, 0)
    with pytest.raises(ValueError, match="values"):
        logz_exact(e, 3, values=(1,))
    with pytest.raises(ValueError, match="distinct"):
        logz_exact(e, 3, values=(1, 1))
    with pytest.raises(ValueError, match="energies"):
        logz_exact(lambda s: s, 3)


# non-finite numbers and a box too small (checked on concrete values only)


def test_quadrature_with_a_nan_region_raises_with_the_count():
    energy = lambda x: jnp.where(x[:, 0] > 2.0, jnp.nan, 0.5 * x[:, 0] ** 2)  # noqa: E731
    with pytest.raises(ValueError, match=r"`energy_fn` returned NaN at 15 of 41 grid points"):
        logz_quadrature(energy, -8.0, 8.0, num_points=41)
    # under jit the check is skipped (no concrete value): NaN, as before
    assert np.isnan(jax.jit(lambda: logz_quadrature(energy, -8.0, 8.0, num_points=41))())


def test_exact_with_a_nan_configuration_raises_with_the_count():
    energy = lambda s: jnp.where(s.sum(-1) == 3, jnp.nan, -s.sum(-1))  # noqa: E731
    with pytest.raises(ValueError, match=r"NaN at 1 of 8 configurations"):
        logz_exact(energy, 3, values=(0, 1))


def test_quadrature_box_too_small_warns():
    energy = lambda x: 0.5 * jnp.sum(x**2, -1)  # noqa: E731
    with pytest.warns(RuntimeWarning, match=r"edge of the box.*Enlarge the box"):
        logz_quadrature(energy, -3.0, 3.0, num_points=101, dim=2)
    with pytest.warns(RuntimeWarning, match=r"edge of the box"):
        logz_quadrature(energy, [-8.0, -8.0], [8.0, 2.0])  # too small in one dimension only
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        logz_quadrature(energy, -6.0, 6.0, num_points=101, dim=2)  # exp(-18) < 1e-6: silent
