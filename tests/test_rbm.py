"""RBM and Gaussian-Bernoulli RBM: energies, exact log Z, block Gibbs, CD/PCD through SVI."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from numpyro.infer import SVI

from numpyro_ebm.estimators import ContrastiveDivergence, PersistentContrastiveDivergence, no_guide
from numpyro_ebm.models.rbm import RBM, GaussianBernoulliRBM, bernoulli_base


def all_binary(n):
    return np.array(list(itertools.product([0, 1], repeat=n)), np.float32)


def random_params(key, V, H, scale=1.0):
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "W": scale * jax.random.normal(k1, (V, H)),
        "a": 0.5 * jax.random.normal(k2, (V,)),
        "b": 0.5 * jax.random.normal(k3, (H,)),
    }


def brute_log_partition(rbm, params):
    V, H = rbm.num_visible, rbm.num_hidden
    v, h = all_binary(V), all_binary(H)
    E = rbm.joint_energy(params, v[:, None, :], h[None, :, :])
    return jax.scipy.special.logsumexp(-E)


def exact_visible_probs(rbm, params):
    v = all_binary(rbm.num_visible)
    logp = -rbm.free_energy(params, v) - rbm.log_partition(params)
    return v, np.exp(np.asarray(logp, np.float64))


def test_free_energy_sums_out_hidden():
    rbm = RBM(4, 3)
    params = random_params(jax.random.key(0), 4, 3)
    v, h = all_binary(4), all_binary(3)
    E = rbm.joint_energy(params, v[:, None, :], h[None, :, :])
    np.testing.assert_allclose(
        rbm.free_energy(params, v), -jax.scipy.special.logsumexp(-E, axis=1), rtol=1e-5,
        atol=1e-5)


@pytest.mark.parametrize("V,H", [(5, 3), (3, 5), (4, 4)])
def test_log_partition_matches_brute_force(V, H):
    rbm = RBM(V, H)
    params = random_params(jax.random.key(V * 10 + H), V, H)
    np.testing.assert_allclose(rbm.log_partition(params), brute_log_partition(rbm, params),
                               rtol=1e-5)
    # chunked enumeration gives the same number
    np.testing.assert_allclose(rbm.log_partition(params, chunk_size=2),
                               rbm.log_partition(params), rtol=1e-6)
    # normalized: the probabilities of all visible states sum to one
    _, p = exact_visible_probs(rbm, params)
    assert abs(p.sum() - 1.0) < 1e-5


def test_log_partition_limits():
    rbm = RBM(30, 25)
    params = {"W": jnp.zeros((30, 25)), "a": jnp.zeros(30), "b": jnp.zeros(25)}
    with pytest.raises(ValueError, match="at most 24"):
        rbm.log_partition(params)
    rbm = RBM(30, 10)
    params = {"W": jnp.zeros((30, 10)), "a": jnp.zeros(30), "b": jnp.zeros(10)}
    np.testing.assert_allclose(rbm.log_partition(params), 40 * math.log(2), rtol=1e-6)


def test_conditionals_and_features():
    rbm = RBM(6, 4)
    params = random_params(jax.random.key(1), 6, 4)
    v = all_binary(6)[:10]
    ph = rbm.hidden_probabilities(params, v)
    assert ph.shape == (10, 4)
    # p(h_j = 1 | v) from the joint energy
    h1 = jnp.zeros(4).at[0].set(1.0)
    h0 = jnp.zeros(4)
    d = rbm.joint_energy(params, v, jnp.broadcast_to(h0, (10, 4))) - rbm.joint_energy(
        params, v, jnp.broadcast_to(h1, (10, 4)))
    np.testing.assert_allclose(ph[:, 0], jax.nn.sigmoid(d), rtol=1e-5)
    assert rbm.visible_probabilities(params, ph).shape == (10, 6)


def test_block_gibbs_samples_exact_marginal():
    """Frequencies of the 8 visible states over 4000 chains vs the exact p(v): 4 s.e. each."""
    rbm = RBM(3, 2)
    params = random_params(jax.random.key(2), 3, 2, scale=1.5)
    v_all, p = exact_visible_probs(rbm, params)
    n = 4000
    res = rbm.sample(jax.random.key(3), params, num_chains=n, num_steps=30)
    assert res.positions.shape == (n, 3)
    assert np.all(np.isfinite(res.acceptance_rate))  # flip rate is reported
    idx = np.asarray(res.positions, np.int64) @ np.array([4, 2, 1])
    freq = np.bincount(idx, minlength=8) / n
    se = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(freq - p) < 4 * se + 1e-3), (freq, p)


def test_kernel_errors():
    rbm = RBM(3, 2)
    with pytest.raises(TypeError, match="`params` is required"):
        rbm.kernel()
    with pytest.raises(ValueError, match="shape"):
        rbm.kernel({"W": jnp.zeros((2, 3)), "a": jnp.zeros(3), "b": jnp.zeros(2)})
    with pytest.raises(TypeError, match="dict"):
        rbm.log_partition(jnp.zeros(3))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        rbm.model(jnp.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"`data` holds 1 value\(s\) outside the allowed values \[0, 1\]"):
        rbm.model(jnp.zeros((5, 3)).at[2, 1].set(0.5))
    with pytest.raises(ValueError, match=r"`data` holds 1 value"):
        rbm.model(jnp.zeros((5, 3)).at[0, 0].set(jnp.nan))
    with pytest.raises(ValueError, match=r"`data` contains 1 non-finite"):
        GaussianBernoulliRBM(3, 2).model(jnp.zeros((5, 3)).at[0, 0].set(jnp.nan))
    with pytest.raises(ValueError, match="num_visible"):
        RBM(0, 2)


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def teacher():
    """Data drawn exactly from a known RBM (V=8, H=4) by enumerating the 256 visible states."""
    rbm = RBM(8, 4)
    params = random_params(jax.random.key(10), 8, 4, scale=1.5)
    # centred biases: no unit is almost always on or off, so the correlations carry the signal
    params["a"], params["b"] = -0.5 * params["W"].sum(1), -0.5 * params["W"].sum(0)
    v_all, p = exact_visible_probs(rbm, params)
    idx = jax.random.choice(jax.random.key(11), 256, (3000,), p=jnp.asarray(p / p.sum()))
    data = jnp.asarray(v_all)[idx]
    true_ll = float(rbm.log_likelihood(params, data[2000:]).mean())
    return data[:2000], data[2000:], true_ll


def _fit(rbm, loss, guide, data, steps, lr):
    schedule = optax.cosine_decay_schedule(lr, steps, 0.05)  # decay: PCD+Adam is noisy otherwise
    svi = SVI(rbm.model, guide, optax.adam(schedule), loss=loss)
    result = svi.run(jax.random.key(0), steps, data, subsample_size=100, progress_bar=False)
    return rbm.get_params(result.params)


def test_cd_through_svi_learns_teacher(teacher):
    train, test, true_ll = teacher
    rbm = RBM(8, 4)
    init_ll = float(rbm.log_likelihood(rbm.init_params(jax.random.key(0), train), test).mean())
    params = _fit(rbm, ContrastiveDivergence(None, num_steps=1), no_guide, train, 1500,
                  0.03)
    ll = float(rbm.log_likelihood(params, test).mean())
    # the optimum on 2000 examples is within ~0.05 nats of the teacher; CD-1 has a small bias
    assert ll > true_ll - 0.1, (ll, true_ll, init_ll)
    assert init_ll < true_ll - 0.4  # the factorized start is far off


@pytest.mark.slow  # 10 s; test_cd_through_svi_learns_teacher, and test_contrastive's PCD tests
def test_pcd_through_svi_learns_teacher(teacher):
    train, test, true_ll = teacher
    rbm = RBM(8, 4)
    pcd = PersistentContrastiveDivergence(
        None, num_steps=1, num_chains=100, reinit_prob=0.0,
        init_dist=bernoulli_base(8))
    params = _fit(rbm, pcd, pcd.guide, train, 1500, 0.03)
    ll = float(rbm.log_likelihood(params, test).mean())
    assert ll > true_ll - 0.1, (ll, true_ll)


# ----------------------------------------------------------------------------- Gaussian-Bernoulli


def test_gaussian_bernoulli_log_partition_and_sampler():
    rbm = GaussianBernoulliRBM(2, 3, sigma=jnp.array([0.7, 1.3]))
    params = rbm.init_params(jax.random.key(0))
    params["W"] = jax.random.normal(jax.random.key(1), (2, 3))
    params["a"] = jnp.array([0.5, -1.0])
    params["b"] = jnp.array([0.3, -0.2, 0.1])
    # free energy sums out h
    v = jax.random.normal(jax.random.key(2), (5, 2))
    h = all_binary(3)
    E = rbm.joint_energy(params, v[:, None, :], h[None, :, :])
    np.testing.assert_allclose(rbm.free_energy(params, v),
                               -jax.scipy.special.logsumexp(-E, axis=1), rtol=1e-5, atol=1e-5)
    # log Z against grid quadrature
    g = np.linspace(-12, 12, 801, dtype=np.float32)
    xx, yy = np.meshgrid(g, g, indexing="ij")
    grid = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], -1))
    lz_grid = jax.scipy.special.logsumexp(-rbm.free_energy(params, grid)) + 2 * np.log(g[1] - g[0])
    np.testing.assert_allclose(rbm.log_partition(params), lz_grid, atol=1e-3)
    # block Gibbs mean against the quadrature mean, 4 standard errors
    w = np.exp(np.asarray(-rbm.free_energy(params, grid) - lz_grid, np.float64))
    w /= w.sum()
    mean = (w[:, None] * np.asarray(grid)).sum(0)
    sd = np.sqrt((w[:, None] * (np.asarray(grid) - mean) ** 2).sum(0))
    n = 4000
    res = rbm.sample(jax.random.key(3), params, num_chains=n, num_steps=40)
    np.testing.assert_array_less(np.abs(np.asarray(res.positions).mean(0) - mean),
                                 4 * sd / np.sqrt(n))


@pytest.mark.slow  # 13 s; test_cd_through_svi_learns_teacher trains a binary RBM the same way
def test_gaussian_bernoulli_cd_through_svi():
    """CD-5 on Gaussian data: learns the mean and (with learn_sigma) the scale."""
    key = jax.random.key(0)
    data = jnp.array([1.0, -2.0]) + jnp.array([0.5, 2.0]) * jax.random.normal(key, (2000, 2))
    rbm = GaussianBernoulliRBM(2, 2, learn_sigma=True)
    cd = ContrastiveDivergence(None, num_steps=5)
    svi = SVI(rbm.model, no_guide, optax.adam(0.03), loss=cd)
    result = svi.run(jax.random.key(1), 1500, data, subsample_size=200, progress_bar=False)
    params = rbm.get_params(result.params)
    res = rbm.sample(jax.random.key(2), params, num_chains=4000, num_steps=50)
    # against the data's own mean (what CD can learn; -2.07 on the second axis, not -2.0). Over
    # 12 training seeds (stop 23) the learned mean of the second axis (data std 2) was off by
    # -0.07 on average, sd 0.06, worst -0.16; the first axis (std 0.5) by at most 0.05. The old
    # bound, 0.15 around -2.0, had held by the seed's luck (2 of 6 seeds missed it).
    np.testing.assert_allclose(np.asarray(res.positions).mean(0), np.asarray(data.mean(0)),
                               atol=0.28)
    np.testing.assert_allclose(np.asarray(res.positions).std(0), [0.5, 2.0], rtol=0.15)
