"""Deep Boltzmann machine: exact log Z, Gibbs sampler, mean field, AIS, mean-field + PCD training."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from numpyro_ebm.models.dbm import DBM


def all_binary(n):
    return jnp.asarray(np.array(list(itertools.product([0, 1], repeat=n)), np.float32))


def random_params(dbm, key, scale=1.0):
    ks = jax.random.split(key, 5)
    return {k: (scale if k.startswith("W") else 0.5) * jax.random.normal(kk, shape)
            for kk, (k, shape) in zip(ks, dbm.param_shapes.items())}


def brute_force(dbm, params):
    """log of exp(-E) summed over h (per v) and log Z, over all 2**(V+H1+H2) states."""
    v, h1, h2 = all_binary(dbm.num_visible), all_binary(dbm.num_hidden1), all_binary(
        dbm.num_hidden2)
    E = dbm.energy(params, v[:, None, None], h1[None, :, None], h2[None, None, :])
    log_pv = jax.scipy.special.logsumexp(-E, axis=(1, 2))
    return v, log_pv, jax.scipy.special.logsumexp(log_pv)


def test_exact_log_partition_and_likelihood():
    dbm = DBM(4, 3, 3)
    params = random_params(dbm, jax.random.key(0))
    v, log_pv, log_Z = brute_force(dbm, params)
    np.testing.assert_allclose(dbm.log_partition(params), log_Z, rtol=1e-5)
    np.testing.assert_allclose(dbm.log_unnormalized(params, v), log_pv, rtol=1e-5, atol=1e-5)
    ll = dbm.log_likelihood(params, v)
    np.testing.assert_allclose(jnp.exp(ll).sum(), 1.0, rtol=1e-5)


def test_mean_field_bound():
    dbm = DBM(4, 3, 3)
    params = random_params(dbm, jax.random.key(1))
    v, log_pv, _ = brute_force(dbm, params)
    mu1, mu2 = dbm.mean_field(params, v, 30)
    # fixed point of the mean-field equations
    np.testing.assert_allclose(
        mu1, jax.nn.sigmoid(v @ params["W1"] + mu2 @ params["W2"].T + params["b1"]), atol=1e-4)
    bound = dbm.mean_field_bound(params, v, 30)
    assert np.all(np.asarray(bound) <= np.asarray(log_pv) + 1e-4)
    assert float(jnp.mean(log_pv - bound)) < 0.5  # a useful bound


def test_gibbs_samples_exact_marginal():
    dbm = DBM(3, 2, 2)
    params = random_params(dbm, jax.random.key(2), scale=1.5)
    v, log_pv, log_Z = brute_force(dbm, params)
    p = np.exp(np.asarray(log_pv - log_Z, np.float64))
    n = 4000
    state = dbm.sample(jax.random.key(3), params, n, 50)
    idx = np.asarray(state.v, np.int64) @ np.array([4, 2, 1])
    freq = np.bincount(idx, minlength=8) / n
    assert np.all(np.abs(freq - p) < 4 * np.sqrt(p * (1 - p) / n) + 1e-3), (freq, p)


def test_ais_matches_enumeration():
    dbm = DBM(12, 10, 6)
    params = random_params(dbm, jax.random.key(4), scale=0.6)
    exact = dbm.log_partition(params)
    res = dbm.logz_ais(jax.random.key(5), params, num_temperatures=1000, num_chains=200)
    err = abs(float(res.log_Z - exact))
    assert 0 < float(res.stderr) < 0.1
    assert err < 4 * float(res.stderr), (float(res.log_Z), float(exact), float(res.stderr))
    assert res.positions.h1.shape == (200, 10)


def test_fit_mean_field_pcd_improves_likelihood():
    """Data from a sparse 'two prototypes' distribution; training raises the exact test LL."""
    key = jax.random.key(6)
    protos = jnp.array([[1, 1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1, 1]], jnp.float32)
    k1, k2 = jax.random.split(key)
    which = jax.random.bernoulli(k1, 0.5, (1500,)).astype(jnp.int32)
    flips = jax.random.bernoulli(k2, 0.05, (1500, 8))
    data = jnp.abs(protos[which] - flips.astype(jnp.float32))
    dbm = DBM(8, 6, 4)
    init = dbm.init_params(jax.random.key(7), data[:1000])
    fit = dbm.fit(jax.random.key(8), data[:1000], optax.adam(optax.cosine_decay_schedule(
        0.01, 1500, 0.05)), num_steps=1500, batch_size=50, num_chains=100, num_gibbs=5,
        params=init)
    ll0 = float(dbm.log_likelihood(init, data[1000:]).mean())
    ll = float(dbm.log_likelihood(fit.params, data[1000:]).mean())
    # entropy of the generating distribution: log 2 + 8 H(0.05) = 2.28 nats
    true = float(np.log(2) + 8 * -(0.05 * np.log(0.05) + 0.95 * np.log(0.95)))
    assert ll0 < -5.0
    assert ll > -true - 0.2, (ll0, ll, -true)  # measured: -2.36 vs -2.28
    assert fit.losses.shape == (1500,)


def test_errors():
    dbm = DBM(3, 2, 2)
    with pytest.raises(ValueError, match="lacks"):
        dbm.log_partition({"W1": jnp.zeros((3, 2))})
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        dbm.fit(jax.random.key(0), jnp.zeros((5, 4)))
    with pytest.raises(ValueError, match="num_hidden2"):
        DBM(3, 2, 0)
