"""The model protocol (numpyro_ebm.models.base.EnergyModel) for the latent-variable and family
models: every model exposes the same methods; AIS along each model's own annealing path equals
the exact log Z; a trained RBM is sampled after ``svi.run``; the RBM's site is honestly binary and
CD picks it by the kind rule."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import pytest
from numpy.testing import assert_allclose
from numpyro import handlers
from numpyro.infer import SVI

import numpyro_ebm
from numpyro_ebm import (
    AnnealingPath,
    ContrastiveDivergence,
    Unnormalized,
    logz_ais,
    no_guide,
    sample_chains,
)
from numpyro_ebm.estimators import is_label_site, observed_ebm_sites, select_sites
from numpyro_ebm.models import (
    DBM,
    RBM,
    ExponentialFamily,
    GaussianBernoulliRBM,
    GraphIsing,
    LinearChainCRF,
    LinearChainCRFModel,
    Potts,
    ProductOfExperts,
    RBMBase,
    gaussian_statistics,
)
from numpyro_ebm.models.base import EnergyModel

PROTOCOL = ("init_params", "energy", "logdensity", "distribution", "model", "get_params",
            "annealing_path", "kernel", "sample", "log_partition", "logz_ais")


def all_binary(n):
    return jnp.asarray(np.array(list(itertools.product([0, 1], repeat=n)), np.float32))


def random_params(model, key, scale=1.0):
    keys = jax.random.split(key, len(model.param_shapes))
    out = {}
    for k, (name, shape) in zip(keys, model.param_shapes.items()):
        out[name] = (scale if name.startswith("W") else 0.3) * jax.random.normal(k, shape)
    if "log_sigma" in out:
        out["log_sigma"] = jnp.log(jnp.linspace(0.6, 1.4, shape[0]))
    return out


def bits(key, n, d):
    return jax.random.bernoulli(key, 0.4, (n, d)).astype(jnp.float32)


# (model, data, has an exact sampler, has an exact log Z)
CASES = {
    "rbm": lambda: (RBM(4, 3), bits(jax.random.key(0), 10, 4), True, True),
    "gbrbm": lambda: (GaussianBernoulliRBM(3, 2, learn_sigma=True),
                      jax.random.normal(jax.random.key(0), (10, 3)), True, True),
    "dbm": lambda: (DBM(3, 2, 2), bits(jax.random.key(0), 10, 3), True, True),
    "expfam": lambda: (ExponentialFamily(gaussian_statistics, theta=jnp.array([0.0, -0.5])),
                       jax.random.normal(jax.random.key(0), (10,)), False, False),
    "poe": lambda: (ProductOfExperts(dist.Normal(0.0, 1.0).expand([2]).to_event(1),
                                     lambda x: 0.1 * jnp.sum(x**4, -1), event_shape=(2,)),
                    jax.random.normal(jax.random.key(0), (10, 2)), False, False),
    # issue 12: discrete models on graphs
    "graph_ising": lambda: (GraphIsing(np.array([[0, 1, 0.5, 0], [1, 0, 1, 0], [0.5, 1, 0, 2],
                                                 [0, 0, 2, 0]], np.float32)),
                            2.0 * bits(jax.random.key(0), 10, 4) - 1.0, True, True),
    "potts": lambda: (Potts(3, shape=(2, 3)),
                      jax.random.randint(jax.random.key(0), (10, 2, 3), 0, 3).astype(jnp.float32),
                      True, True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_model_exposes_the_protocol(case):
    model, data, exact_sampler, exact_logz = CASES[case]()
    assert isinstance(model, EnergyModel)
    for method in PROTOCOL:
        assert callable(getattr(model, method)), method
    params = model.init_params(jax.random.key(1), data)
    assert set(params) == set(model.param_shapes)
    model.check_params(params)

    # model(data) for SVI: param sites f"{name}_{key}", observed Unnormalized site `site`
    tr = handlers.trace(handlers.seed(model.model, 0)).get_trace(data)
    svi_params = {k: s["value"] for k, s in tr.items() if s["type"] == "param"}
    assert all(k.startswith(f"{model.name}_") for k in svi_params)
    got = model.get_params(svi_params)
    assert set(got) == set(params)
    assert all(jnp.shape(got[k]) == jnp.shape(params[k]) for k in params)
    (site,) = observed_ebm_sites(model.model, svi_params, (data,))
    assert site.name == model.site and not is_label_site(site)

    # energy, logdensity and the distribution agree; one energy per event
    d = model.distribution(params)
    assert isinstance(d, Unnormalized) and tuple(d.event_shape) == tuple(model.event_shape)
    x = site.data
    e = model.energy(params, x)
    assert e.shape == x.shape[: x.ndim - len(model.event_shape)]
    assert_allclose(model.logdensity(params, x), -e, rtol=1e-6)
    assert_allclose(d.energy(x), e, rtol=1e-6)

    if exact_sampler:
        path = model.annealing_path(params)
        assert isinstance(path, AnnealingPath) and d.annealing_path is not None
        assert_allclose(jax.vmap(lambda xi: path.logdensity_fn(1.0, xi))(x), -e, rtol=1e-5,
                        atol=1e-5)  # f_1 = -E: the sampler's state reports the model's density
        algorithm = model.kernel(params)
        assert not callable(algorithm) and callable(algorithm.step)  # built, bound
        res = model.sample(jax.random.key(2), params, num_chains=5, num_steps=3)
        assert res.positions.shape == (5, *model.event_shape)
    else:
        assert d.annealing_path is None
        with pytest.raises(NotImplementedError):
            model.annealing_path(params)
    if exact_logz:
        assert np.isfinite(float(model.log_partition(params)))
    else:
        with pytest.raises(NotImplementedError, match="logz_ais"):
            model.log_partition(params)


def test_crf_model_exposes_the_conditional_protocol():
    """The CRF is a conditional model: energy(params, tags, inputs), exact log Z(x)."""
    crf = LinearChainCRFModel(num_tags=3)
    assert isinstance(crf, EnergyModel)
    params = crf.init_params()
    unary = jax.random.normal(jax.random.key(0), (2, 4, 3))
    tags = jnp.zeros((2, 4), jnp.int32)
    assert_allclose(crf.log_partition(params, unary), jax.nn.logsumexp(unary, -1).sum(-1),
                    rtol=1e-5)
    assert_allclose(crf.logdensity(params, tags, unary), -crf.energy(params, tags, unary))
    assert isinstance(crf.distribution(params, unary), LinearChainCRF)
    tr = handlers.trace(handlers.seed(crf.model, 0)).get_trace(unary, tags)
    assert tr["tags"]["is_observed"]
    with pytest.raises(NotImplementedError, match="exact"):
        crf.annealing_path(params)


# ----------------------------------------------------------------------------- AIS vs exact


def check_within(res, exact, k=4.0):
    err = abs(float(res.log_Z) - float(exact))
    assert 0 < float(res.stderr) < 0.2
    assert err < k * float(res.stderr), (float(res.log_Z), float(exact), float(res.stderr))


def test_ais_rbm_own_path_matches_enumeration():
    """logz_ais on rbm.distribution(params) (which carries the S&M path) vs exact log Z; a path
    whose kernel ignores beta (the defect of issue 10) is caught by the same check."""
    rbm = RBM(8, 6)
    params = random_params(rbm, jax.random.key(3), scale=1.0)
    exact = rbm.log_partition(params)
    kw = dict(num_chains=200, num_temperatures=300)
    check_within(logz_ais(jax.random.key(4), rbm.distribution(params), **kw), exact)
    path = rbm.annealing_path(params)
    broken = path._replace(kernel=lambda beta: path.kernel(1.0))
    with pytest.raises(ValueError, match="does not sample the density"):
        logz_ais(jax.random.key(4), broken, **kw)
    # without the check the engine reports a confident wrong answer (issue 10's defect)
    betas = numpyro_ebm.temperature_schedule(300)
    res = numpyro_ebm.annealed_importance_sampling(jax.random.key(4), broken, betas, 200)
    assert abs(float(res.log_Z - exact)) > 4 * float(res.stderr)


def test_ais_gaussian_bernoulli_rbm_matches_exact():
    gb = GaussianBernoulliRBM(3, 5)
    params = random_params(gb, jax.random.key(5), scale=0.8)
    check_within(gb.logz_ais(jax.random.key(6), params, num_chains=200, num_temperatures=300),
                 gb.log_partition(params))


@pytest.mark.parametrize("rao_blackwellize", [False, True])
def test_ais_dbm_paths_match_enumeration(rao_blackwellize):
    dbm = DBM(6, 4, 3)
    params = random_params(dbm, jax.random.key(7), scale=0.8)
    res = dbm.logz_ais(jax.random.key(8), params, rao_blackwellize=rao_blackwellize,
                       num_chains=200, num_temperatures=300)
    check_within(res, dbm.log_partition(params))
    assert dbm.split(res.positions).h2.shape == (200, 3)


# ----------------------------------------------------------------------------- the trained RBM


# 23 s; test_rbm trains RBMs through SVI and checks the sampler against the exact marginal
@pytest.mark.slow
def test_trained_rbm_samples_after_svi_run_match_exact_marginal():
    """CD-1 with the site's own sampler (kernel=None) through svi.run; then sample the trained
    RBM with rbm.sample and with sample_chains on its distribution: no tracer leaks, and the
    samples' mean matches the exact E[v] (enumeration) within 4 standard errors."""
    rbm = RBM(4, 3)
    protos = jnp.array([[1, 1, 0, 0], [0, 0, 1, 1]], jnp.float32)
    which = jax.random.bernoulli(jax.random.key(9), 0.5, (500,)).astype(jnp.int32)
    noise = jax.random.bernoulli(jax.random.key(10), 0.2, (500, 4)).astype(jnp.float32)
    data = jnp.abs(protos[which] - noise)
    svi = SVI(rbm.model, no_guide, optax.adam(0.05), loss=ContrastiveDivergence(None, num_steps=1))
    result = svi.run(jax.random.key(11), 300, data, subsample_size=50, progress_bar=False)
    params = rbm.get_params(result.params)
    ll0 = float(rbm.log_likelihood(rbm.init_params(jax.random.key(0), data), data).mean())
    # nothing from the trace stays on the model object
    assert all(isinstance(v, (int, float, str)) for v in vars(rbm).values())

    v_all = all_binary(4)
    p = jnp.exp(rbm.log_likelihood(params, v_all))
    mean = np.asarray(p @ v_all)
    sd = np.sqrt(mean * (1 - mean))
    n = 3000
    res = rbm.sample(jax.random.key(12), params, num_chains=n, num_steps=30)
    init = rbm.init_visible(jax.random.key(13), params, n)
    res2 = sample_chains(jax.random.key(14), rbm.distribution(params), None, init, 30)
    for r in (res, res2):
        assert r.state.hidden.shape == (n, 3)
        assert_allclose(r.logdensity, -rbm.energy(params, r.positions), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_less(np.abs(np.asarray(r.positions).mean(0) - mean),
                                     4 * sd / np.sqrt(n) + 1e-3)
    assert float(rbm.log_likelihood(params, data).mean()) > ll0 + 0.1  # it learned the pairs


# ----------------------------------------------------------------------------- the RBM's site


def test_rbm_site_is_binary_and_cd_selects_it_by_kind():
    rbm = RBM(4, 2)
    params = {f"rbm_{k}": v for k, v in rbm.init_params(jax.random.key(0)).items()}
    data = bits(jax.random.key(1), 6, 4)
    sites = observed_ebm_sites(rbm.model, params, (data,))
    (site,) = sites
    support = site.dist.support
    assert support.is_discrete and support.event_dim == 1
    assert bool(jnp.all(support(data))) and not bool(jnp.all(support(data + 0.5)))
    assert not is_label_site(site)  # discrete, but a vector: CD/PCD's kind
    assert select_sites(sites, None, "sampled", "ContrastiveDivergence") == [site]
    with pytest.raises(ValueError, match="label sites"):
        select_sites(sites, None, "label", "ConditionalMaximumLikelihood")
    # the Gaussian-Bernoulli RBM's visible units are real
    gb = GaussianBernoulliRBM(2, 2)
    assert not gb.distribution(gb.init_params()).support.is_discrete


def test_rbm_kernel_needs_params_and_gb_rbm_disables_nothing():
    rbm = RBM(3, 2)
    with pytest.raises(TypeError, match="`params`"):
        rbm.kernel()
    assert issubclass(RBM, RBMBase) and issubclass(GaussianBernoulliRBM, RBMBase)
    assert not issubclass(GaussianBernoulliRBM, RBM)
    assert not hasattr(GaussianBernoulliRBM, "visible_probabilities")
