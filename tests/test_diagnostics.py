import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpyro_ebm.evaluation.diagnostics import ess_per_second, mmd


def test_mmd_matches_brute_force_and_detects_a_shift():
    kx, ky, kz = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (300, 2))
    y = jax.random.normal(ky, (300, 2))
    z = jax.random.normal(kz, (300, 2)) + jnp.array([0.5, 0.0])
    h = 1.0
    k = lambda a, b: np.exp(-np.sum((a[:, None] - b[None]) ** 2, -1) / (2 * h**2))
    xn, yn = np.asarray(x), np.asarray(y)
    kxx, kyy, kxy = k(xn, xn), k(yn, yn), k(xn, yn)
    brute = (kxx.sum() - np.trace(kxx)) / (300 * 299) + (kyy.sum() - np.trace(kyy)) / (300 * 299)
    brute -= 2 * kxy.mean()
    np.testing.assert_allclose(mmd(x, y, bandwidth=h), brute, rtol=1e-4, atol=1e-6)
    same, shifted = float(mmd(x, y)), float(mmd(x, z))
    assert abs(same) < 0.01 < shifted


def test_ess_per_second_of_independent_draws():
    s = jax.random.normal(jax.random.key(1), (500, 8, 3))  # (draws, chains, dim), iid
    e = ess_per_second(s, 2.0)
    assert e.shape == (3,)
    np.testing.assert_allclose(e, 4000 / 2.0, rtol=0.15)


def test_bad_inputs():
    with pytest.raises(ValueError, match="seconds"):
        ess_per_second(jnp.zeros((10, 2)), 0.0)
    with pytest.raises(ValueError, match="same event size"):
        mmd(jnp.zeros((5, 2)), jnp.zeros((5, 3)))
