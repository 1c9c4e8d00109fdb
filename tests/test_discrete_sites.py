"""Discrete EBM sites inside numpyro.infer.MCMC (EBMGibbs) against exact enumeration, and the
graph models (GraphIsing, Potts) with their own samplers against enumeration."""

import functools
import itertools

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpy.testing import assert_allclose
from numpyro.diagnostics import effective_sample_size
from numpyro.infer import MCMC, NUTS, Predictive

import numpyro_ebm
from numpyro_ebm import BlackJAXKernel, EBMGibbs, EBMSiteGibbs
from numpyro_ebm.models import RBM, GraphIsing, Ising, Potts, lattice_adjacency
from numpyro_ebm.sampling import ebm_gibbs as _ebm_gibbs
from numpyro_ebm.sampling import metropolised_block_step

# EBMGibbs builds on numpyro.infer.gibbs (numpyro >= 0.22); the rest of this file runs on 0.21
needs_numpyro_gibbs = pytest.mark.skipif(
    _ebm_gibbs._NO_GIBBS is not None, reason="EBMGibbs needs numpyro >= 0.22"
)

ISING = Ising((3, 3))
SIGMA = 0.8
Y = jnp.array([[1.2, 0.9, -0.4], [0.8, 0.1, -1.1], [1.0, 0.6, 0.3]])


def all_configs(values, n):
    return jnp.asarray(np.array(list(itertools.product(values, repeat=n)), np.float32))


def ising_model(y):
    """3x3 periodic Ising prior with latent coupling J (log Z(J) by enumeration) and a Gaussian
    likelihood."""
    J = numpyro.sample("J", dist.HalfNormal(1.0))
    params = {"J": J, "h": 0.0}
    s = numpyro.sample("s", ISING.distribution(params))
    numpyro.factor("log_Z", -ISING.log_partition(params))
    numpyro.sample("y", dist.Normal(s, SIGMA), obs=y)


def fixed_j_model(y, J=0.5):
    s = numpyro.sample("s", ISING.distribution({"J": J, "h": 0.0}))
    numpyro.sample("y", dist.Normal(s, SIGMA), obs=y)


def exact_ising_posterior(y, J_fixed=None):
    """P(s_i = +1 | y) for all 9 spins, and E[J | y], sd[J | y] (J on a fine grid)."""
    s = all_configs((-1, 1), 9).reshape(-1, 3, 3)
    bonds = ISING.bond_sum(s)
    loglik = dist.Normal(s, SIGMA).log_prob(y).sum((-2, -1))
    if J_fixed is not None:
        lw = J_fixed * bonds + loglik
        w = jnp.exp(lw - jax.nn.logsumexp(lw))
        return np.asarray(jnp.einsum("k,kij->ij", w, (s > 0).astype(jnp.float32))), None, None
    grid = jnp.linspace(1e-4, 6.0, 3000)
    log_z = jax.vmap(lambda j: ISING.log_partition({"J": j, "h": 0.0}))(grid)
    lw = (dist.HalfNormal(1.0).log_prob(grid)[:, None] + grid[:, None] * bonds[None]
          - log_z[:, None] + loglik[None])
    w = jnp.exp(lw - jax.nn.logsumexp(lw))
    p_up = jnp.einsum("k,kij->ij", w.sum(0), (s > 0).astype(jnp.float32))
    wj = w.sum(1)
    mean = jnp.sum(wj * grid)
    sd = jnp.sqrt(jnp.sum(wj * (grid - mean) ** 2))
    return np.asarray(p_up), float(mean), float(sd)


def assert_within_mc_error(draws, exact, k=4.5, floor=0.01):
    """``draws`` (num_samples, ...) vs exact means, tolerance k standard errors from the ESS."""
    draws = np.asarray(draws, np.float64)
    est = draws.mean(0)
    ess = np.maximum(effective_sample_size(draws[None]), 20.0)
    se = draws.std(0) / np.sqrt(ess)
    assert np.all(np.abs(est - exact) <= k * se + floor), (est, exact, se)


# ----------------------------------------------------------------------------- Ising + likelihood


# 21 s; the categorical Potts and graph-Ising sites are checked against enumeration
@pytest.mark.slow
@needs_numpyro_gibbs
def test_fixed_coupling_posterior_spins_vs_enumeration_and_factorized_blocks_always_accept():
    """J fixed: EBMGibbs(model=...) alone. With the Ising colouring the conditional of each colour
    class factorizes (Gaussian likelihood), so every block move is accepted; with the default
    checkerboard (not a proper colouring of the 3x3 torus) moves are rejected sometimes but the
    chain is still exact. Single-site blocks are plain Gibbs."""
    exact, _, _ = exact_ising_posterior(Y, J_fixed=0.5)
    for blocks, all_accepted in (({"s": ISING}, True), (None, False),
                                 ({"s": "single_site"}, True)):  # 9 blocks: one lax.scan
        mcmc = MCMC(EBMGibbs(model=fixed_j_model, blocks=blocks), num_warmup=100,
                    num_samples=3000, progress_bar=False)
        mcmc.run(jax.random.key(0), Y, extra_fields=("block_states.0.accept_prob",))
        s = mcmc.get_samples()["s"]
        assert s.shape == (3000, 3, 3) and set(np.unique(np.asarray(s))) <= {-1.0, 1.0}
        assert_within_mc_error(np.asarray(s > 0), exact)
        acc = np.asarray(mcmc.get_extra_fields()["block_states.0.accept_prob"])
        if all_accepted:
            assert acc.min() > 0.999
        else:
            assert 0.2 < acc.mean() < 0.999


@pytest.mark.slow
@needs_numpyro_gibbs
def test_latent_coupling_nuts_posterior_vs_enumeration():
    """The issue's test: spins and J (HalfNormal prior, log Z(J) by enumeration), NUTS for J."""
    exact, mean_j, sd_j = exact_ising_posterior(Y)
    mcmc = MCMC(EBMGibbs(NUTS(ising_model), blocks={"s": ISING}), num_warmup=500,
                num_samples=8000, progress_bar=False)
    mcmc.run(jax.random.key(1), Y)
    samples = mcmc.get_samples()
    assert_within_mc_error(np.asarray(samples["s"] > 0), exact)
    assert_within_mc_error(samples["J"], mean_j)
    assert abs(float(np.std(samples["J"])) - sd_j) < 0.1 * sd_j


@pytest.mark.slow
@needs_numpyro_gibbs
def test_latent_coupling_blackjax_posterior_vs_enumeration():
    """The same model with J moved by a BlackJAX kernel (MALA, step size adapted): its cached
    log density is refreshed whenever the spins move, so the spin marginals and E[J] match."""
    exact, mean_j, _ = exact_ising_posterior(Y)
    kernel = EBMGibbs(blackjax.mala, model=ising_model, blocks={"s": ISING},
                      blackjax_options={"adapt": True, "step_size": 0.1})
    mcmc = MCMC(kernel, num_warmup=300, num_samples=3000, progress_bar=False)
    mcmc.run(jax.random.key(2), Y, init_params={"J": jnp.array(0.5)})
    samples = mcmc.get_samples()
    assert_within_mc_error(np.asarray(samples["s"] > 0), exact)
    assert_within_mc_error(samples["J"], mean_j)


def noise_model(y):
    """Fixed-J Ising spins with a latent noise scale (a continuous site for NUTS)."""
    s = numpyro.sample("s", ISING.distribution({"J": 0.4, "h": 0.0}))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    numpyro.sample("y", dist.Normal(s, sigma), obs=y)


@needs_numpyro_gibbs
def test_mcmc_toolbox_print_summary_group_by_chain_predictive_arviz(capsys):
    az = pytest.importorskip("arviz")
    # the continuous site through a BlackJAX kernel (its exactness: the slow test above)
    kernel = EBMGibbs(blackjax.mala, model=noise_model,
                      blackjax_options={"adapt": True, "step_size": 0.1})
    mcmc = MCMC(kernel, num_warmup=20, num_samples=50, num_chains=2, chain_method="sequential",
                progress_bar=False)
    mcmc.run(jax.random.key(3), Y)
    mcmc.print_summary()
    out = capsys.readouterr().out
    assert "s[1,1]" in out and "sigma" in out
    grouped = mcmc.get_samples(group_by_chain=True)
    assert grouped["s"].shape == (2, 50, 3, 3) and grouped["sigma"].shape == (2, 50)
    pred = Predictive(noise_model, mcmc.get_samples())(jax.random.key(4), None)
    assert pred["y"].shape == (100, 3, 3)
    idata = az.from_numpyro(mcmc)
    assert idata.posterior["s"].shape == (2, 50, 3, 3)
    assert "y" in idata.log_likelihood


# ----------------------------------------------------------------------------- categorical sites


POTTS = Potts(3, np.array([[0, 1, 1, 0, 0], [1, 0, 1, 1, 0], [1, 1, 0, 0, 1], [0, 1, 0, 0, 1],
                           [0, 0, 1, 1, 0]], np.float32))
EMIT = jnp.log(jnp.array([[0.7, 0.2, 0.1], [0.15, 0.7, 0.15], [0.1, 0.3, 0.6]]))
OBS = jnp.array([0, 0, 1, 2, 2])


def potts_model(obs):
    x = numpyro.sample("x", POTTS.distribution({"J": 0.7, "h": jnp.array([0.2, 0.0, -0.1])}))
    numpyro.sample("obs", dist.Categorical(logits=EMIT[x.astype(jnp.int32)]), obs=obs)


@needs_numpyro_gibbs
def test_categorical_potts_site_posterior_vs_enumeration():
    conf = all_configs(range(3), 5)
    lw = (-POTTS.energy({"J": 0.7, "h": jnp.array([0.2, 0.0, -0.1])}, conf)
          + EMIT[conf.astype(jnp.int32), OBS].sum(-1))
    w = jnp.exp(lw - jax.nn.logsumexp(lw))
    exact = np.asarray(jnp.einsum("c,cik->ik", w, jax.nn.one_hot(conf, 3)))
    mcmc = MCMC(EBMGibbs(model=potts_model, blocks={"x": POTTS}), num_warmup=100,
                num_samples=4000, progress_bar=False)
    mcmc.run(jax.random.key(5), OBS, extra_fields=("block_states.0.accept_prob",))
    x = np.asarray(mcmc.get_samples()["x"])
    assert set(np.unique(x)) <= {0.0, 1.0, 2.0}
    assert_within_mc_error(np.asarray(jax.nn.one_hot(x, 3)), exact)
    # the emission likelihood factorizes over nodes: the colour blocks are exact Gibbs
    assert np.asarray(mcmc.get_extra_fields()["block_states.0.accept_prob"]).min() > 0.999


@pytest.mark.slow  # 11 s; the other sites are checked against enumeration in this file
@needs_numpyro_gibbs
def test_binary_rbm_site_observed_through_gaussian_noise_vs_enumeration():
    """A latent binary RBM site (support {0, 1}, its free energy couples every visible unit, so
    the default checkerboard blocks are Metropolis-corrected) observed through Gaussian noise of
    known scale: the posterior marginals of the 6 units match enumeration."""
    rbm = RBM(6, 3)
    keys = jax.random.split(jax.random.key(11), 3)
    params = {"W": jax.random.normal(keys[0], (6, 3)), "a": 0.3 * jax.random.normal(keys[1], (6,)),
              "b": 0.3 * jax.random.normal(keys[2], (3,))}
    obs = jnp.array([0.9, 0.2, 0.6, -0.1, 1.1, 0.4])

    def model(obs):
        v = numpyro.sample("v", rbm.distribution(params))
        numpyro.sample("obs", dist.Normal(v, 0.5), obs=obs)

    conf = all_configs((0, 1), 6)
    lw = -rbm.energy(params, conf) + dist.Normal(conf, 0.5).log_prob(obs).sum(-1)
    exact = np.asarray(jnp.exp(lw - jax.nn.logsumexp(lw)) @ conf)
    mcmc = MCMC(EBMGibbs(model=model), num_warmup=100, num_samples=4000, progress_bar=False)
    mcmc.run(jax.random.key(12), obs, extra_fields=("block_states.0.accept_prob",))
    v = np.asarray(mcmc.get_samples()["v"])
    assert set(np.unique(v)) <= {0.0, 1.0}
    assert_within_mc_error(v, exact)
    assert 0.1 < float(np.mean(mcmc.get_extra_fields()["block_states.0.accept_prob"])) < 1.0


@pytest.mark.slow  # 13 s; the other sites are checked against enumeration in this file
@needs_numpyro_gibbs
def test_mixed_model_bernoulli_switch_and_ising_field_vs_enumeration():
    """An ordinary discrete site (Bernoulli) next to the EBM site: both updated exactly by the
    same kernel; the switch sets the Ising field."""

    def model(y):
        z = numpyro.sample("z", dist.Bernoulli(0.3))
        s = numpyro.sample("s", ISING.distribution({"J": 0.3, "h": 0.6 * (2.0 * z - 1.0)}))
        numpyro.sample("y", dist.Normal(s, SIGMA), obs=y)

    s = all_configs((-1, 1), 9).reshape(-1, 3, 3)
    lw = jnp.stack([jnp.log(p) - ISING.energy({"J": 0.3, "h": h}, s) - ISING.log_partition(
        {"J": 0.3, "h": h}) + dist.Normal(s, SIGMA).log_prob(Y).sum((-2, -1))
        for p, h in ((0.7, -0.6), (0.3, 0.6))])
    w = jnp.exp(lw - jax.nn.logsumexp(lw))
    mcmc = MCMC(EBMGibbs(model=model, blocks={"s": ISING}), num_warmup=100, num_samples=4000,
                progress_bar=False)
    mcmc.run(jax.random.key(13), Y)
    samples = mcmc.get_samples()
    assert_within_mc_error(samples["z"], float(w[1].sum()))
    assert_within_mc_error(np.asarray(samples["s"] > 0),
                           np.asarray(jnp.einsum("zk,kij->ij", w, (s > 0).astype(jnp.float32))))


def test_metropolised_block_step_is_exact_on_a_coupled_block():
    """A block whose coordinates are coupled (one block = all 4 units of a dense binary model):
    the MH correction keeps the chain exact (checked against enumeration)."""
    w = jnp.array([[0, 1.0, -0.5, 0.8], [1.0, 0, 0.3, -1], [-0.5, 0.3, 0, 0.6], [0.8, -1, 0.6, 0]])

    def logdensity_fn(x):
        return 0.5 * x @ w @ x + 0.2 * x.sum()

    conf = all_configs((0, 1), 4)
    lw = jax.vmap(logdensity_fn)(conf)
    exact = np.asarray(jnp.exp(lw - jax.nn.logsumexp(lw)) @ conf)

    def step(x, key):
        x, _, accepted, _ = metropolised_block_step(key, x, logdensity_fn, np.arange(4), (0, 1))
        return x, (x, accepted)

    _, (xs, acc) = jax.lax.scan(step, jnp.zeros(4), jax.random.split(jax.random.key(6), 10000))
    assert 0.05 < float(acc.mean()) < 0.95
    assert_within_mc_error(xs, exact)
    # evaluating the candidates in chunks (lax.map) is the same step
    x0 = jnp.array([1.0, 0, 1, 0])
    a = metropolised_block_step(jax.random.key(7), x0, logdensity_fn, np.arange(4), (0, 1))
    b = metropolised_block_step(jax.random.key(7), x0, logdensity_fn, np.arange(4), (0, 1),
                                chunk_size=3)
    assert_allclose(a[0], b[0])
    assert_allclose(a[1], b[1], rtol=1e-6)


# ----------------------------------------------------------------------------- graph models


def random_graph(key, n, p=0.5):
    upper = np.triu(np.asarray(jax.random.bernoulli(key, p, (n, n))), 1)
    weights = np.asarray(jax.random.uniform(jax.random.fold_in(key, 1), (n, n), minval=0.3,
                                            maxval=1.2))
    w = upper * weights
    return (w + w.T).astype(np.float32)


def test_graph_ising_on_a_lattice_is_the_lattice_ising():
    ising = Ising((3, 4))
    params = ising.init_params(beta=0.4, field=0.1)
    s = ising.init_spins(jax.random.key(0), 6)
    for g, x in ((GraphIsing(shape=(3, 4)), s), (GraphIsing(lattice_adjacency((3, 4))),
                                                 s.reshape(6, 12))):
        assert_allclose(g.energy(params, x), ising.energy(params, s), rtol=1e-5, atol=1e-5)
        assert_allclose(g.log_partition(params), ising.log_partition(params), rtol=1e-5)


def test_graph_ising_sampler_vs_enumeration():
    adjacency = random_graph(jax.random.key(7), 7)
    g = GraphIsing(adjacency)
    colours = g.colouring
    assert all(colours[i] != colours[j] for i, j in zip(*np.nonzero(adjacency)))
    params = g.init_params(coupling=0.6, field=jnp.linspace(-0.3, 0.3, 7))
    conf = all_configs((-1, 1), 7)
    lw = -g.energy(params, conf)
    w = jnp.exp(lw - jax.nn.logsumexp(lw))
    assert_allclose(g.log_partition(params), jax.nn.logsumexp(lw), rtol=1e-5)
    exact_mean = np.asarray(w @ conf)
    exact_corr = np.asarray(jnp.einsum("c,ci,cj->ij", w, conf, conf))
    res = g.sample(jax.random.key(8), params, num_chains=3000, num_steps=20)
    x = np.asarray(res.positions)
    se = 1.0 / np.sqrt(3000)
    assert np.all(np.abs(x.mean(0) - exact_mean) < 4.5 * se)
    assert np.all(np.abs(np.einsum("ci,cj->ij", x, x) / 3000 - exact_corr) < 4.5 * se)


@pytest.mark.slow  # 17 s; test_categorical_potts_site_posterior_vs_enumeration samples Potts sites
def test_potts_on_a_lattice_and_on_a_graph_vs_enumeration():
    for potts, field in ((Potts(3, shape=(2, 3), periodic=False), jnp.array([0.3, 0.0, -0.2])),
                         (Potts(3, random_graph(jax.random.key(9), 6)), 0.1 * jnp.arange(18.0)
                          .reshape(6, 3))):
        params = potts.init_params(coupling=0.8, field=field)
        n = potts.num_nodes
        conf = all_configs(range(3), n).reshape((-1,) + potts.event_shape)
        lw = -potts.energy(params, conf)
        assert_allclose(potts.log_partition(params), jax.nn.logsumexp(lw), rtol=1e-5)
        w = jnp.exp(lw - jax.nn.logsumexp(lw))
        exact = np.asarray(jnp.einsum("c,cik->ik", w, potts.one_hot(conf)))
        res = potts.sample(jax.random.key(10), params, num_chains=3000, num_steps=20)
        freq = np.asarray(potts.one_hot(res.positions).mean(0))
        assert np.all(np.abs(freq - exact) < 4.5 * np.sqrt(exact * (1 - exact) / 3000) + 1e-3)


def test_graph_models_reject_bad_input():
    with pytest.raises(ValueError, match="symmetric"):
        GraphIsing(np.array([[0, 1], [0, 0]]))
    with pytest.raises(ValueError, match="adjacency"):
        Potts(3)
    with pytest.raises(ValueError, match="num_states"):
        Potts(1, shape=(3, 3))
    with pytest.raises(ValueError, match=r"params\['h'\]"):
        GraphIsing(shape=(3, 3)).check_params({"J": 0.1, "h": jnp.zeros(4)})
    with pytest.raises(NotImplementedError, match="logz_ais"):
        GraphIsing(shape=(6, 6)).log_partition({"J": 0.1, "h": 0.0})


# ----------------------------------------------------------------------------- errors


def test_discrete_site_under_a_gradient_kernel_names_the_site_and_the_fix():
    for kernel in (NUTS(ising_model),
                   BlackJAXKernel(functools.partial(blackjax.mala, step_size=0.1),
                                  model=ising_model)):
        with pytest.raises(NotImplementedError, match=r"site 's'.*EBMGibbs"):
            MCMC(kernel, num_warmup=1, num_samples=1, progress_bar=False).run(
                jax.random.key(0), Y)


# 31 s (two MCMC compilations); test_sampling checks a built algorithm against the factory
@pytest.mark.slow
@needs_numpyro_gibbs
def test_a_built_blackjax_kernel_is_a_gibbs_block_like_the_factory():
    """EBMGibbs(BlackJAXKernel(...)) (refresh + wrap_model) runs the same chain as the factory
    form, which builds that kernel itself."""
    mala = functools.partial(blackjax.mala, step_size=0.1)
    runs = []
    for kernel in (EBMGibbs(BlackJAXKernel(mala, model=ising_model), blocks={"s": ISING}),
                   EBMGibbs(mala, model=ising_model, blocks={"s": ISING})):
        mcmc = MCMC(kernel, num_warmup=20, num_samples=30, progress_bar=False)
        mcmc.run(jax.random.key(3), Y)
        runs.append(mcmc.get_samples())
    np.testing.assert_array_equal(runs[0]["J"], runs[1]["J"])
    np.testing.assert_array_equal(runs[0]["s"], runs[1]["s"])
    assert float(jnp.std(runs[0]["J"])) > 0  # the continuous block moved


@needs_numpyro_gibbs
def test_ebm_gibbs_errors():
    with pytest.raises(ValueError, match="model="):
        EBMGibbs(functools.partial(blackjax.mala, step_size=0.1))
    # J is continuous and latent but there is no inner kernel
    with pytest.raises(ValueError, match=r"\['J'\].*inner_kernel"):
        MCMC(EBMGibbs(model=ising_model), num_warmup=1, num_samples=1,
             progress_bar=False).run(jax.random.key(0), Y)
    with pytest.raises(ValueError, match="event shape"):
        MCMC(EBMGibbs(model=fixed_j_model, blocks={"s": [np.ones((2, 2), bool)]}),
             num_warmup=1, num_samples=1, progress_bar=False).run(jax.random.key(0), Y)
    with pytest.raises(ValueError, match="exactly once"):
        MCMC(EBMGibbs(model=fixed_j_model, blocks={"s": [np.ones((3, 3), bool)] * 2}),
             num_warmup=1, num_samples=1, progress_bar=False).run(jax.random.key(0), Y)
    with pytest.raises(ValueError, match="not latent discrete sites"):
        MCMC(EBMSiteGibbs(fixed_j_model, sites=["y"]), num_warmup=1, num_samples=1,
             progress_bar=False).run(jax.random.key(0), Y)

    def no_ebm(y):
        numpyro.sample("y", dist.Normal(numpyro.sample("m", dist.Normal()), 1.0), obs=y)

    with pytest.raises(ValueError, match="no latent discrete site"):
        MCMC(EBMGibbs(NUTS(no_ebm)), num_warmup=1, num_samples=1, progress_bar=False).run(
            jax.random.key(0), Y)
    assert numpyro_ebm.EBMGibbs is EBMGibbs


def test_ebm_gibbs_on_an_older_numpyro_names_the_version_it_needs(monkeypatch):
    """On numpyro < 0.22 (no numpyro.infer.gibbs) the package imports and only EBMGibbs and
    EBMSiteGibbs refuse, with an ImportError that names the version to install."""
    monkeypatch.setattr(_ebm_gibbs, "_NO_GIBBS", "numpyro.infer.gibbs (new in numpyro 0.22)")
    for build in (lambda: EBMGibbs(model=fixed_j_model), lambda: EBMSiteGibbs(fixed_j_model)):
        with pytest.raises(ImportError, match=r"numpyro>=0\.22"):
            build()
