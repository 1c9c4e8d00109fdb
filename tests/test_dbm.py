"""Deep Boltzmann machine: exact log Z, Gibbs sampler, mean field, AIS, mean-field + PCD training
through SVI."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from numpyro.infer import SVI

from numpyro_ebm import PersistentContrastiveDivergence
from numpyro_ebm.models import DBM, bernoulli_base


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
    E = dbm.joint_energy(params, v[:, None, None], h1[None, :, None], h2[None, None, :])
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
    state = dbm.split(dbm.sample(jax.random.key(3), params, n, 50).positions)
    idx = np.asarray(state.v, np.int64) @ np.array([4, 2, 1])
    freq = np.bincount(idx, minlength=8) / n
    assert np.all(np.abs(freq - p) < 4 * np.sqrt(p * (1 - p) / n) + 1e-3), (freq, p)


@pytest.mark.slow  # 18 s; test_model_protocol checks the DBM's AIS paths against enumeration
def test_ais_matches_enumeration():
    dbm = DBM(12, 10, 6)
    params = random_params(dbm, jax.random.key(4), scale=0.6)
    exact = dbm.log_partition(params)
    res = dbm.logz_ais(jax.random.key(5), params, num_temperatures=1000, num_chains=200,
                       schedule="linear")
    err = abs(float(res.log_Z - exact))
    assert 0 < float(res.stderr) < 0.1
    assert err < 4 * float(res.stderr), (float(res.log_Z), float(exact), float(res.stderr))
    assert dbm.split(res.positions).h1.shape == (200, 10)


@pytest.mark.slow  # 22 s; the next test checks the same PCD gradient against the surrogate
def test_svi_mean_field_pcd_improves_likelihood():
    """Data from a sparse 'two prototypes' distribution; mean-field + PCD through SVI (plain
    PersistentContrastiveDivergence on the DBM's joint site) raises the exact test LL."""
    key = jax.random.key(6)
    protos = jnp.array([[1, 1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1, 1]], jnp.float32)
    k1, k2 = jax.random.split(key)
    which = jax.random.bernoulli(k1, 0.5, (1500,)).astype(jnp.int32)
    flips = jax.random.bernoulli(k2, 0.05, (1500, 8))
    data = jnp.abs(protos[which] - flips.astype(jnp.float32))
    dbm = DBM(8, 6, 4)
    init = dbm.init_params(jax.random.key(7), data[:1000])
    pcd = PersistentContrastiveDivergence(None, num_steps=5, num_chains=100, reinit_prob=0.0,
                                          init_dist=bernoulli_base(dbm.num_units))
    svi = SVI(dbm.model, pcd.guide, optax.adam(optax.cosine_decay_schedule(0.01, 1500, 0.05)),
              loss=pcd)
    result = svi.run(jax.random.key(8), 1500, data[:1000], subsample_size=50, progress_bar=False,
                     init_params={f"dbm_{k}": v for k, v in init.items()})
    params = dbm.get_params(result.params)
    ll0 = float(dbm.log_likelihood(init, data[1000:]).mean())
    ll = float(dbm.log_likelihood(params, data[1000:]).mean())
    # entropy of the generating distribution: log 2 + 8 H(0.05) = 2.28 nats
    true = float(np.log(2) + 8 * -(0.05 * np.log(0.05) + 0.95 * np.log(0.95)))
    assert ll0 < -5.0
    assert ll > -true - 0.2, (ll0, ll, -true)
    assert result.losses.shape == (1500,)


def test_model_observes_mean_field_state_and_pcd_gradient_is_the_surrogate():
    """The site's value is (v, mu1, mu2); PCD (kernel=None: the DBM's own Gibbs sampler) has the
    gradient of the mean-field + PCD surrogate mean E(v, sg(mu)) - mean E(sg(chains))."""
    from numpyro import handlers

    from numpyro_ebm.estimators import observed_ebm_sites

    dbm = DBM(4, 3, 2)
    params = random_params(dbm, jax.random.key(11))
    data = jax.random.bernoulli(jax.random.key(12), 0.5, (6, 4)).astype(jnp.float32)
    svi_params = {f"dbm_{k}": v for k, v in params.items()}
    (site,) = observed_ebm_sites(dbm.model, svi_params, (data,), {"num_mean_field": 20})
    assert site.name == dbm.site and site.data.shape == (6, dbm.num_units)
    mu1, mu2 = dbm.mean_field(params, data, 20)
    np.testing.assert_allclose(site.data, dbm.join(data, mu1, mu2), rtol=1e-6)
    np.testing.assert_allclose(site.dist.energy(site.data),
                               dbm.joint_energy(params, *dbm.split(site.data)), rtol=1e-5)

    pcd = PersistentContrastiveDivergence(None, num_steps=3, num_chains=7, reinit_prob=0.0,
                                          init_dist=bernoulli_base(dbm.num_units))
    chains = handlers.trace(handlers.seed(pcd.guide, 0)).get_trace()["pcd_chains"]["value"]

    @jax.jit
    def loss_and_chains(p):
        out = pcd.loss_with_mutable_state(jax.random.key(0), {**p, "pcd_chains": chains},
                                          dbm.model, pcd.guide, data, num_mean_field=20)
        return out["loss"], out["mutable_state"]["pcd_chains"]

    grads, new_chains = jax.jit(jax.grad(loss_and_chains, has_aux=True))(svi_params)
    (negatives,) = [c["positions"] for c in new_chains.values()]
    assert set(np.unique(np.asarray(negatives))) <= {0.0, 1.0}  # Gibbs draws, binary

    def surrogate(p):
        p = {k: p[f"dbm_{k}"] for k in params}
        m1, m2 = jax.lax.stop_gradient(dbm.mean_field(p, data, 20))
        return (jnp.mean(dbm.joint_energy(p, data, m1, m2))
                - jnp.mean(dbm.energy(p, jax.lax.stop_gradient(negatives))))

    expected = jax.grad(surrogate)(svi_params)
    for k in svi_params:
        np.testing.assert_allclose(grads[k], expected[k], rtol=1e-4, atol=1e-5)


def test_errors():
    dbm = DBM(3, 2, 2)
    with pytest.raises(ValueError, match="lacks"):
        dbm.log_partition({"W1": jnp.zeros((3, 2))})
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        dbm.model(jnp.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"`data` holds 2 value\(s\) outside the allowed values"):
        dbm.model(jnp.ones((5, 3)).at[1].set(jnp.array([2.0, jnp.nan, 1.0])))
    with pytest.raises(ValueError, match="V \\+ H1 \\+ H2"):
        dbm.split(jnp.zeros((2, 6)))
    with pytest.raises(ValueError, match="num_hidden2"):
        DBM(3, 2, 0)
