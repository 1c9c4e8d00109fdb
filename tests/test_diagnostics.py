import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpyro_ebm.evaluation import auroc, ess_per_second, mmd, psnr


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


# metrics of the applications (moved here from numpyro_ebm.applications)


def test_psnr_formula():
    ref = jnp.zeros((2, 4))
    est = jnp.stack([jnp.full(4, 0.1), jnp.array([0.2, 0.0, 0.0, 0.0])])
    # MSE 0.01 -> 20 dB; MSE 0.01 -> 20 dB
    np.testing.assert_allclose(psnr(est, ref), [20.0, 20.0], rtol=1e-5)
    np.testing.assert_allclose(psnr(est, ref, data_range=2.0), 20 + 20 * np.log10(2), rtol=1e-5)
    np.testing.assert_allclose(psnr(est, ref, axis=None), 20.0, rtol=1e-5)
    with pytest.raises(ValueError, match="same shape"):
        psnr(est, ref[:1])


def test_auroc_matches_pairwise_definition_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    normal = rng.integers(0, 10, 50).astype(float)  # many ties
    anomalous = rng.integers(3, 14, 30).astype(float)
    pairwise = np.mean((anomalous[:, None] > normal) + 0.5 * (anomalous[:, None] == normal))
    labels = np.r_[np.zeros(50), np.ones(30)]
    np.testing.assert_allclose(auroc(normal, anomalous), pairwise, rtol=1e-6)
    np.testing.assert_allclose(auroc(normal, anomalous), roc_auc_score(labels, np.r_[normal, anomalous]), rtol=1e-6)
    assert float(auroc([0.0, 1.0], [2.0, 3.0])) == 1.0
    assert float(auroc([2.0, 3.0], [0.0, 1.0])) == 0.0
