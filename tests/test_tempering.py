"""Parallel tempering (NRPT) and log Z along tempering paths (issue 11)."""

import functools
import itertools
import math

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC

import numpyro_ebm
from numpyro_ebm.models import RBM, Ising
from numpyro_ebm.models.references import onsager_magnetization
from numpyro_ebm.sampling import (
    ladder_from_rejection,
    reset_stats,
    swap_log_acceptance,
    swap_permutation,
)

WEIGHTS = (0.3, 0.7)  # right mode (+6), left mode (-6)


def mixture_logdensity(dim):
    """Two unit Gaussians 12 sd apart along the first axis, weights 0.3 (x0 > 0) / 0.7: log Z = 0."""
    mu = jnp.zeros(dim).at[0].set(6.0)

    def log_p(x):
        a = math.log(WEIGHTS[0]) - 0.5 * jnp.sum((x - mu) ** 2)
        b = math.log(WEIGHTS[1]) - 0.5 * jnp.sum((x + mu) ** 2)
        return jnp.logaddexp(a, b) - 0.5 * dim * math.log(2 * math.pi)

    return log_p, mu


MALA = functools.partial(blackjax.mala, step_size=0.8)


# -- the swap move, exactly ---------------------------------------------------------------------


@pytest.mark.parametrize("parity", [0, 1])
def test_swap_move_leaves_product_invariant_exactly(parity):
    """Enumerate every joint state of 4 replicas on {0, 1, 2} under a non-geometric path; the swap
    kernel (DEO pairs of one parity, acceptance from swap_log_acceptance) maps the product of the
    tempered distributions to itself, and satisfies detailed balance."""
    values = np.arange(3)
    betas = jnp.array([0.0, 0.3, 0.7, 1.0])
    g = jnp.array([0.0, 1.5, -0.7])
    h = jnp.array([0.4, -1.0, 2.0])

    def f(beta, x):  # any family of log densities, not affine in beta
        return beta * g[x] + beta**2 * h[x] + jnp.sin(3 * beta) * (x == 1)

    K = betas.shape[0] - 1
    states = list(itertools.product(values, repeat=K + 1))
    pi_k = [np.exp(np.array([f(b, v) for v in values])) for b in betas]
    pi_k = [p / p.sum() for p in pi_k]
    pi = np.array([np.prod([pi_k[k][s[k]] for k in range(K + 1)]) for s in states])
    index = {s: i for i, s in enumerate(states)}
    T = np.zeros((len(states), len(states)))
    attempted = [k for k in range(K) if k % 2 == parity]
    b = np.asarray(betas)
    b_up, b_down = np.r_[b[1:], b[-1]], np.r_[b[0], b[:-1]]
    for s in states:
        x = jnp.array(s)
        fs = jnp.array([f(b[j], x[j]) for j in range(K + 1)])
        fu = jnp.array([f(b_up[j], x[j]) for j in range(K + 1)])
        fd = jnp.array([f(b_down[j], x[j]) for j in range(K + 1)])
        alpha = np.minimum(1.0, np.exp(np.asarray(swap_log_acceptance(fs, fu, fd))))
        for decisions in itertools.product([False, True], repeat=len(attempted)):
            swapped = np.zeros(K, bool)
            prob = 1.0
            for k, d in zip(attempted, decisions):
                swapped[k] = d
                prob *= alpha[k] if d else 1.0 - alpha[k]
            perm = np.asarray(swap_permutation(jnp.asarray(swapped)))
            T[index[s], index[tuple(np.asarray(s)[perm])]] += prob
    np.testing.assert_allclose(T.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(pi @ T, pi, atol=1e-6)
    np.testing.assert_allclose(pi[:, None] * T, (pi[:, None] * T).T, atol=1e-6)


def test_pt_step_with_identity_kernels_samples_the_product():
    """The whole PT step (exact base redraw at slot 0 + swaps), local kernels doing nothing, from
    exact product draws: the joint frequencies of 3 binary replicas after 4 steps match the
    product of the tempered distributions (chi-square, fixed seed)."""
    w = jnp.array([0.0, 2.0])  # f_beta(x) = beta * w[x] + log(1/2): base uniform on {0, 1}

    def logdensity_fn(beta, x):
        return beta * w[x] - math.log(2.0)

    path = numpyro_ebm.transition_path(
        logdensity_fn, lambda key, beta, x: x,
        lambda key, n: jax.random.bernoulli(key, 0.5, (n,)).astype(jnp.int32), 0.0)
    betas = jnp.array([0.0, 0.5, 1.0])
    pt = numpyro_ebm.parallel_tempering(path, betas=betas)
    p1 = [np.exp(np.asarray(b) * np.asarray(w)) / np.exp(np.asarray(b) * np.asarray(w)).sum()
          for b in betas]
    n = 40_000
    key = jax.random.key(0)
    starts = jnp.stack([jax.random.bernoulli(jax.random.fold_in(key, k), p1[k][1], (n,))
                        for k in range(3)], 1).astype(jnp.int32)

    def run(key, x):
        state = pt.init(x[2])
        state = state._replace(replicas=x)
        for t in range(4):
            state, _ = pt.step(jax.random.fold_in(key, t), state)
        return state.replicas

    out = np.asarray(jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(1), n), starts))
    codes = out[:, 0] * 4 + out[:, 1] * 2 + out[:, 2]
    counts = np.bincount(codes, minlength=8)
    expected = np.array([p1[0][a] * p1[1][b] * p1[2][c]
                         for a, b, c in itertools.product([0, 1], repeat=3)]) * n
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    assert chi2 < 24.3  # 7 degrees of freedom, p = 0.001


# -- the separated mixture: MALA stays, PT moves ---------------------------------------------------


# 34 s; the swap move and the PT step are tested exactly above, and test_pcd_annealed recovers a
# mode weight with PT that MALA misses
@pytest.mark.slow
def test_mala_keeps_start_ratio_pt_recovers_mixture_weights_2d():
    log_p, mu = mixture_logdensity(2)
    num_chains = 64
    split = jnp.where((jnp.arange(num_chains) < num_chains // 2)[:, None], mu, -mu)
    # MALA, half the chains started in each mode: no chain crosses, the 50/50 start survives.
    mala = numpyro_ebm.sample_chains(jax.random.key(0), log_p, MALA, split, 2000, num_samples=500)
    start_side = np.asarray(split[:, 0] > 0)
    assert np.all(np.asarray(mala.samples[..., 0] > 0) == start_side)
    assert float(np.mean(np.asarray(mala.samples[..., 0] > 0))) == 0.5

    # PT, every chain started in the light mode: the weights come out.
    pt = numpyro_ebm.parallel_tempering(log_p, MALA, num_temperatures=10)
    start = jnp.tile(mu, (num_chains, 1))
    state = numpyro_ebm.tune_ladder(jax.random.key(1), pt, start, num_rounds=4, num_steps=200)
    res = numpyro_ebm.sample_chains(jax.random.key(2), None, pt, start, 2000, num_samples=1000,
                                    init_state=state)
    weight = float(np.mean(np.asarray(res.samples[..., 0] > 0)))
    assert abs(weight - WEIGHTS[0]) < 0.02
    summary = numpyro_ebm.tempering_summary(res.state)
    r = np.asarray(summary.rejection_rates)
    # the adapted ladder equalizes the rejection rates ...
    assert r.max() - r.min() < 0.05
    assert abs(float(summary.barrier) - r.sum()) < 1e-5
    # ... and round trips happen, at most at NRPT's rate under exact local moves (see below)
    theory = 1.0 / (2.0 + 2.0 * np.sum(r / (1.0 - r)))
    assert 0.3 * theory < float(summary.round_trip_rate) < 1.05 * theory
    # the positions users see are the beta = 1 replica's
    np.testing.assert_array_equal(res.positions, res.state.replicas[:, -1])
    np.testing.assert_allclose(res.logdensity, jax.vmap(log_p)(res.positions), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_pt_recovers_mixture_weights_10d():
    log_p, mu = mixture_logdensity(10)
    pt = numpyro_ebm.parallel_tempering(log_p, functools.partial(blackjax.mala, step_size=0.5),
                                        num_temperatures=20, num_local_steps=2)
    start = jnp.tile(mu, (64, 1))
    state = numpyro_ebm.tune_ladder(jax.random.key(1), pt, start, num_rounds=5, num_steps=300)
    res = numpyro_ebm.sample_chains(jax.random.key(2), None, pt, start, 3000, num_samples=1500,
                                    init_state=state)
    weight = float(np.mean(np.asarray(res.samples[..., 0] > 0)))
    assert abs(weight - WEIGHTS[0]) < 0.02


@pytest.mark.slow  # 31 s; the 2-D mixture test bounds the round-trip rate by the same theory
@pytest.mark.parametrize("scheme", ["deo", "seo"])
def test_round_trip_rate_matches_theory_with_exact_local_moves(scheme):
    """With exact draws at every beta (Gaussian base to Gaussian target: every tempered
    distribution is Gaussian), the round-trip rate is Syed et al.'s (2022, Thm. 3 and 4):
    1 / (2 + 2 sum r/(1-r)) for DEO, 1 / (2K + 2 sum r/(1-r)) for SEO."""
    m, s, s0 = 3.0, 0.5, 4.0

    def f(beta, x):
        return -0.5 * (1 - beta) * (x / s0) ** 2 - 0.5 * beta * ((x - m) / s) ** 2

    def transition(key, beta, x):
        prec = (1 - beta) / s0**2 + beta / s**2
        return beta * m / s**2 / prec + jax.random.normal(key, jnp.shape(x)) / jnp.sqrt(prec)

    path = numpyro_ebm.transition_path(
        f, transition, lambda key, n: s0 * jax.random.normal(key, (n,)), 0.5 * math.log(2 * math.pi * s0**2))
    K = 12
    pt = numpyro_ebm.parallel_tempering(path, num_temperatures=K, scheme=scheme)
    state = numpyro_ebm.tune_ladder(jax.random.key(0), pt, jnp.zeros(32), num_rounds=3, num_steps=500)
    res = numpyro_ebm.sample_chains(jax.random.key(1), None, pt, jnp.zeros(32), 4000, init_state=state)
    summary = numpyro_ebm.tempering_summary(res.state)
    r = np.asarray(summary.rejection_rates, np.float64)
    extra = 2.0 if scheme == "deo" else 2.0 * K
    theory = 1.0 / (extra + 2.0 * np.sum(r / (1.0 - r)))
    assert abs(float(summary.round_trip_rate) / theory - 1.0) < 0.1
    # and the stepping stones give log Z of the target: 0.5 log(2 pi s^2)
    ss = numpyro_ebm.stepping_stone(res.state)
    _check_logz(ss, 0.5 * math.log(2 * math.pi * s**2))


@pytest.mark.slow
def test_deo_beats_seo_round_trips():
    """With many replicas the non-reversible scheme makes more round trips than the reversible."""
    log_p, mu = mixture_logdensity(2)
    start = jnp.tile(mu, (16, 1))
    betas = numpyro_ebm.temperature_schedule(24, "geometric")
    rates = {}
    for scheme in ("deo", "seo"):
        pt = numpyro_ebm.parallel_tempering(log_p, MALA, betas=betas, scheme=scheme)
        res = numpyro_ebm.sample_chains(jax.random.key(3), None, pt, start, 1500)
        rates[scheme] = float(numpyro_ebm.tempering_summary(res.state).round_trip_rate)
    assert rates["deo"] > 2 * rates["seo"]


def test_ladder_from_rejection_equalizes():
    betas = jnp.linspace(0.0, 1.0, 5)
    rejection = jnp.array([0.8, 0.1, 0.1, 0.2])
    new = np.asarray(ladder_from_rejection(betas, rejection))
    assert new[0] == 0.0 and new[-1] == 1.0 and np.all(np.diff(new) > 0)
    # Lambda(beta) piecewise linear: 0.8 in [0, .25], then 0.1, 0.1, 0.2: each new pair holds 0.3
    # cumulative rejection (0, .8, .9, 1.0, 1.2) at betas (0, .25, .5, .75, 1); targets 0.3 k
    np.testing.assert_allclose(new, [0.0, 0.3 / 0.8 * 0.25, 0.6 / 0.8 * 0.25, 0.5, 1.0], rtol=1e-5)


# -- log Z -----------------------------------------------------------------------------------------


def _check_logz(result, exact, floor=0.0):
    err = float(result.log_Z) - exact
    assert np.isfinite(float(result.stderr)) and float(result.stderr) < 0.1
    assert abs(err) < 4 * float(result.stderr) + floor, (err, float(result.stderr))


@pytest.mark.slow
def test_logz_stepping_stone_mixture_2d():
    log_p, _ = mixture_logdensity(2)
    energy = lambda x: -log_p(x) - 1.25  # noqa: E731  log Z = 1.25
    base = dist.Normal(0.0, 8.0).expand([2]).to_event(1)
    ss = numpyro_ebm.logz_stepping_stone(jax.random.key(0), energy, base, MALA, num_chains=8,
                                         num_temperatures=8, num_steps=600, num_warmup_rounds=2,
                                         num_warmup_steps=150)
    _check_logz(ss, 1.25)
    assert float(ss.log_Z_reverse) > float(ss.log_Z) - 4 * float(ss.stderr)


def test_logz_smc_mixture_2d():
    log_p, _ = mixture_logdensity(2)
    energy = lambda x: -log_p(x) - 1.25  # noqa: E731  log Z = 1.25
    base = dist.Normal(0.0, 8.0).expand([2]).to_event(1)
    smc = numpyro_ebm.logz_smc(jax.random.key(1), energy, base, MALA, num_particles=400, num_runs=4,
                               num_steps=5)
    _check_logz(smc, 1.25)
    assert isinstance(smc, numpyro_ebm.AISResult)
    assert smc.positions.shape == (1600, 2)
    assert smc.betas.shape[0] == 4 and np.all(np.asarray(smc.betas[:, -1]) == 1.0)
    weight = float(np.mean(np.asarray(smc.positions[:, 0] > 0)))
    assert abs(weight - WEIGHTS[0]) < 0.05


@pytest.mark.slow
def test_logz_stepping_stone_and_smc_mixture_10d():
    log_p, _ = mixture_logdensity(10)
    energy = lambda x: -log_p(x)  # noqa: E731
    base = dist.Normal(0.0, 8.0).expand([10]).to_event(1)
    kernel = functools.partial(blackjax.mala, step_size=0.5)
    ss = numpyro_ebm.logz_stepping_stone(jax.random.key(0), energy, base, kernel, num_chains=16,
                                         num_temperatures=24, num_steps=2000, num_local_steps=2)
    _check_logz(ss, 0.0)
    smc = numpyro_ebm.logz_smc(jax.random.key(1), energy, base, kernel, num_particles=1000,
                               num_runs=4, num_steps=20)
    _check_logz(smc, 0.0)


# 26 s; test_reset_stats_and_stepping_stone_on_state runs the estimator, test_logz_smc_mixture_2d
# checks a log Z
@pytest.mark.slow
def test_logz_stepping_stone_ising_by_enumeration():
    ising = Ising((3, 4))
    params = ising.init_params(beta=0.6)
    ss = numpyro_ebm.logz_stepping_stone(jax.random.key(0), ising.annealing_path(params),
                                         num_chains=8, num_temperatures=6, num_steps=500,
                                         num_warmup_rounds=1, num_warmup_steps=200)
    _check_logz(ss, float(ising.log_partition(params)))


@pytest.mark.slow
def test_logz_smc_ising_by_enumeration():
    ising = Ising((3, 4))
    params = ising.init_params(beta=0.6)
    smc = numpyro_ebm.logz_smc(jax.random.key(1), ising.annealing_path(params), num_particles=500,
                               num_runs=4)
    _check_logz(smc, float(ising.log_partition(params)))


@pytest.mark.slow
def test_logz_rbm_enumerable_hidden():
    rbm = RBM(12, 4)
    params = rbm.init_params(jax.random.key(0))
    params = {**params, "W": 2.0 * jax.random.normal(jax.random.key(1), params["W"].shape)}
    exact = float(rbm.log_partition(params))
    # PT over the model's own (non-geometric) path: exact block Gibbs at every beta
    ss = numpyro_ebm.logz_stepping_stone(jax.random.key(2), rbm.annealing_path(params),
                                         num_chains=8, num_temperatures=8, num_steps=1000,
                                         num_warmup_rounds=2, num_warmup_steps=200)
    _check_logz(ss, exact)
    # SMC needs a geometric path: the free energy from a Bernoulli base with single-site Gibbs
    base = dist.Bernoulli(logits=jnp.zeros(12)).to_event(1)
    with pytest.raises(ValueError, match="not geometric"):
        numpyro_ebm.logz_smc(jax.random.key(3), rbm.annealing_path(params))
    smc = numpyro_ebm.logz_smc(
        jax.random.key(3), lambda v: rbm.energy(params, v), base,
        functools.partial(numpyro_ebm.gibbs, values=(0, 1)), num_particles=400, num_runs=4,
        num_steps=2)
    _check_logz(smc, exact)


# -- discrete models: Ising below the critical point ---------------------------------------------


@pytest.mark.slow
def test_ising_32_gibbs_stays_pt_splits_signs_onsager():
    ising = Ising((32, 32))
    params = ising.init_params(beta=0.5)
    up = ising.init_spins(jax.random.key(0), 16, kind="up")
    gibbs = ising.sample(jax.random.key(1), params, 16, num_steps=2000, num_samples=500,
                         init_positions=up)
    assert float(jnp.min(ising.magnetization(gibbs.samples))) > 0.0

    pt = numpyro_ebm.parallel_tempering(ising.annealing_path(params), num_temperatures=24)
    state = numpyro_ebm.tune_ladder(jax.random.key(2), pt, up, num_rounds=5, num_steps=400)
    res = numpyro_ebm.sample_chains(jax.random.key(3), None, pt, up, 6000, num_samples=3000,
                                    init_state=state)
    m = np.asarray(ising.magnetization(res.samples))  # (3000, 16)
    positive = np.mean(m > 0, axis=0)  # per chain: independent ensembles
    frac, se = positive.mean(), positive.std(ddof=1) / np.sqrt(positive.size)
    assert abs(frac - 0.5) < 4 * se + 0.02, (frac, se)
    assert 0.2 < frac < 0.8
    assert abs(float(np.mean(np.abs(m))) - float(onsager_magnetization(0.5))) < 0.01


# -- composition -----------------------------------------------------------------------------------


def test_pt_inside_numpyro_mcmc_blackjax_kernel():
    log_p, _ = mixture_logdensity(2)
    kernel = numpyro_ebm.BlackJAXKernel(
        functools.partial(numpyro_ebm.parallel_tempering, kernel=MALA, num_temperatures=8),
        potential_fn=lambda z: -log_p(z))
    mcmc = MCMC(kernel, num_warmup=200, num_samples=1500, num_chains=2,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.key(0), init_params=jnp.array([[6.0, 0.0], [6.0, 0.0]]),
             extra_fields=("potential_energy",))
    z = np.asarray(mcmc.get_samples(group_by_chain=True))
    assert z.shape == (2, 1500, 2)
    frac = np.mean(z[..., 0] > 0, axis=1)
    assert np.all((frac > 0.05) & (frac < 0.7))  # both modes visited by every chain
    pe = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["potential_energy"])
    np.testing.assert_allclose(pe, -np.asarray(jax.vmap(jax.vmap(log_p))(jnp.asarray(z))),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # 28 s; test_pcd_annealed trains PCD with PT negatives against the mode weights
def test_pt_as_pcd_negatives():
    """PCD with PT chains (the whole PT state persists between updates)."""
    import numpyro
    import optax
    from numpyro.infer import SVI

    data = 2.0 + 0.5 * jax.random.normal(jax.random.key(0), (512, 2))

    def model(x):
        mean = numpyro.param("mean", jnp.zeros(2))
        energy = lambda y: 0.5 * jnp.sum((y - mean) ** 2, -1) / 0.25  # noqa: E731
        with numpyro.plate("data", x.shape[0], subsample_size=128):
            batch = numpyro.subsample(x, event_dim=1)
            numpyro.sample("x", numpyro_ebm.Unnormalized(energy, (2,)), obs=batch)

    kernel = functools.partial(numpyro_ebm.parallel_tempering,
                               kernel=functools.partial(blackjax.mala, step_size=0.2),
                               num_temperatures=4, base_scale=4.0)
    pcd = numpyro_ebm.PersistentContrastiveDivergence(
        kernel, num_steps=5, num_chains=128,
        init_dist=dist.Normal(0.0, 2.0).expand([2]).to_event(1))
    svi = SVI(model, pcd.guide, optax.adam(0.05), loss=pcd)
    result = svi.run(jax.random.key(1), 300, data, progress_bar=False)
    np.testing.assert_allclose(result.params["mean"], data.mean(0), atol=0.15)


def test_pt_over_ising_path_in_sample_chains():
    ising = Ising((4, 4))
    params = ising.init_params(beta=0.5)
    pt = numpyro_ebm.parallel_tempering(ising.annealing_path(params), num_temperatures=6)
    up = ising.init_spins(jax.random.key(0), 8, kind="up")
    res = numpyro_ebm.sample_chains(jax.random.key(1), None, pt, up, 200, num_samples=100)
    assert res.samples.shape == (100, 8, 4, 4)
    assert np.all(np.isin(np.asarray(res.samples), [-1.0, 1.0]))
    np.testing.assert_allclose(res.logdensity, -ising.energy(params, res.positions), rtol=1e-6)
    assert float(np.mean(np.asarray(ising.magnetization(res.samples)) < 0)) > 0.1


def test_reset_stats_and_stepping_stone_on_state():
    log_p, mu = mixture_logdensity(2)
    pt = numpyro_ebm.parallel_tempering(log_p, MALA, num_temperatures=6)
    res = numpyro_ebm.sample_chains(jax.random.key(0), None, pt, jnp.tile(mu, (4, 1)), 20)
    assert int(res.state.stats.num_steps[0]) == 20
    fresh = reset_stats(res.state)
    assert int(fresh.stats.num_steps.sum()) == 0 and int(fresh.stats.round_trips.sum()) == 0
    with pytest.raises(ValueError, match="no accumulated steps"):
        numpyro_ebm.stepping_stone(fresh)
    one = jax.tree.map(lambda a: a[0], res.state)
    assert np.isnan(float(numpyro_ebm.stepping_stone(one).stderr))


# -- bad input ------------------------------------------------------------------------------------


def test_bad_inputs_name_the_argument():
    log_p, _ = mixture_logdensity(2)
    with pytest.raises(ValueError, match="betas"):
        numpyro_ebm.parallel_tempering(log_p, MALA, betas=jnp.array([0.0, 0.6, 0.4, 1.0]))
    with pytest.raises(ValueError, match="betas"):
        numpyro_ebm.parallel_tempering(log_p, MALA, betas=jnp.array([0.0, 0.5, 0.5, 1.0]))
    with pytest.raises(ValueError, match="scheme"):
        numpyro_ebm.parallel_tempering(log_p, MALA, scheme="random")
    with pytest.raises(ValueError, match="kernel_kwargs"):
        numpyro_ebm.parallel_tempering(log_p, blackjax.mala, num_temperatures=3,
                                       kernel_kwargs={"step_size": jnp.ones(3)})
    with pytest.raises(TypeError, match="kernel"):
        numpyro_ebm.parallel_tempering(log_p)
    with pytest.raises(TypeError, match="kernel"):
        numpyro_ebm.parallel_tempering(log_p, MALA(log_p))
    ising = Ising((3, 3))
    with pytest.raises(ValueError, match="AnnealingPath"):
        numpyro_ebm.parallel_tempering(ising.annealing_path(ising.init_params()), MALA)
    with pytest.raises(TypeError, match="base"):
        numpyro_ebm.parallel_tempering(log_p, MALA, base="normal")
    with pytest.raises(ValueError, match="base_scale"):
        numpyro_ebm.parallel_tempering(log_p, MALA, base_scale=-1.0)


def test_kernel_kwargs_per_slot_step_sizes():
    log_p, mu = mixture_logdensity(2)
    pt = numpyro_ebm.parallel_tempering(
        log_p, blackjax.mala, num_temperatures=5,
        kernel_kwargs={"step_size": jnp.array([3.0, 3.0, 2.0, 1.5, 1.0, 0.8])})
    res = numpyro_ebm.sample_chains(jax.random.key(0), None, pt, jnp.tile(mu, (4, 1)), 100)
    assert np.all(np.isfinite(np.asarray(res.logdensity)))
    assert np.all(np.asarray(res.acceptance_rate) > 0.3)
