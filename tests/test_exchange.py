"""The exchange algorithm (``numpyro_ebm.ExchangeKernel``) for posteriors over the parameters of an
energy-based likelihood, against exact posteriors.

* Ising coupling J on a 4x4 periodic lattice from 10 observed configurations: exact posterior on
  a grid (log Z(J) by enumeration of the 65536 states); the exchange chain with exact auxiliary
  draws matches its mean and sd within Monte Carlo error (ESS); the pseudo-likelihood posterior
  (``pseudo_log_likelihood``) has an sd off by more than 25% (miscalibrated), which the exchange
  sd is resolved well enough to tell apart.
* A Gaussian EBM E(x) = tau (x - mu)^2 / 2 with a Normal-Gamma prior: closed-form posterior.
* The approximate exchange algorithm (the site's own Gibbs sampler) on the Ising case (slow).
* Perfect draws by coupling from the past (``ising_cftp``) against the exact distribution of a
  3x3 lattice, and as the exchange's exact auxiliary sampler on the 4x4 case (slow).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.diagnostics import effective_sample_size
from numpyro.infer import MCMC, init_to_value

import numpyro_ebm
from numpyro_ebm import ExchangeKernel, Unnormalized, ising_cftp, pseudo_log_likelihood
from numpyro_ebm.models import Ising

L, J_TRUE, N_DATA = (4, 4), 0.4, 10
ISING = Ising(L)


def all_configurations(shape):
    n = math.prod(shape)
    idx = np.arange(2**n)[:, None]
    return jnp.asarray(np.where((idx >> np.arange(n)) & 1, 1.0, -1.0), jnp.float32).reshape(
        (-1, *shape))


CONFIGS = all_configurations(L)
BONDS = ISING.bond_sum(CONFIGS)  # B(s) for all 65536 states: E_J(s) = -J B(s)


def ising_model(spins):
    J = numpyro.sample("J", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", spins.shape[0]):
        numpyro.sample("s", ISING.distribution({"J": J, "h": 0.0}), obs=spins)


_ORDER = np.argsort(np.asarray(BONDS), kind="stable")
_LEVELS, _STARTS, _COUNTS = np.unique(np.asarray(BONDS)[_ORDER], return_index=True,
                                      return_counts=True)
SORTED_CONFIGS = CONFIGS[_ORDER]


def exact_ising_sampler(rng_key, params, y):
    """Exact draws of the 4x4 Ising model at J = params['J']: the bond sum level b with
    probability count_b e^(J b) / Z (the 65536 states grouped by B), then a uniform state of
    that level."""
    key_level, key_state = jax.random.split(rng_key)
    logits = jnp.log(jnp.asarray(_COUNTS, jnp.float32)) + params["J"] * jnp.asarray(_LEVELS)
    level = jax.random.categorical(key_level, logits, shape=y.shape[:1])
    offset = jnp.floor(jax.random.uniform(key_state, y.shape[:1]) * jnp.asarray(_COUNTS)[level])
    return SORTED_CONFIGS[jnp.asarray(_STARTS)[level] + offset.astype(jnp.int32)]


@pytest.fixture(scope="module")
def ising_data():
    idx = jax.random.categorical(jax.random.key(0), J_TRUE * BONDS, shape=(N_DATA,))
    return CONFIGS[idx]


def grid_mean_sd(grid, log_post):
    grid = np.asarray(grid, np.float64)
    w = np.exp(np.asarray(log_post, np.float64) - np.max(log_post))
    w /= w.sum()
    mean = w @ grid
    return mean, math.sqrt(w @ (grid - mean) ** 2)


@pytest.fixture(scope="module")
def ising_posteriors(ising_data):
    """(mean, sd) of the exact and the pseudo-likelihood posteriors of J on a grid."""
    grid = jnp.linspace(-0.4, 1.4, 901)
    log_Z = jax.jit(jax.vmap(lambda J: jax.scipy.special.logsumexp(J * BONDS)))(grid)
    np.testing.assert_allclose(log_Z[500], ISING.log_partition({"J": grid[500], "h": 0.0}),
                               rtol=1e-5)
    log_prior = dist.Normal(0.0, 1.0).log_prob(grid)
    exact = log_prior + grid * ISING.bond_sum(ising_data).sum() - N_DATA * log_Z

    @jax.jit
    def pl_sum(J):
        energy = lambda s: ISING.energy({"J": J, "h": 0.0}, s)  # noqa: E731
        return pseudo_log_likelihood(energy, ising_data).sum()

    pl = log_prior + jax.lax.map(pl_sum, grid)
    m, sd = grid_mean_sd(grid, exact)
    assert grid[0] < m - 10 * sd and m + 10 * sd < grid[-1]
    return (m, sd), grid_mean_sd(grid, pl)


def check_within_mc_error(samples, mean, sd, name):
    x = np.asarray(samples, np.float64)
    ess = float(effective_sample_size(x))
    assert ess > 200, (name, ess)
    assert abs(x.mean() - mean) < 4 * sd / math.sqrt(ess), (name, x.mean(), mean, sd, ess)
    assert abs(x.std() / sd - 1) < 4 * math.sqrt(1 / (2 * ess)) + 0.02, (name, x.std(), sd, ess)
    return ess


# 12 s; test_exchange_enumerate_sampler_3x3 and the Gaussian EBM check the exchange sampler
@pytest.mark.slow
def test_exchange_ising_exact_aux_matches_exact_posterior_and_pl_is_miscalibrated(
    ising_data, ising_posteriors
):
    (m_exact, sd_exact), (m_pl, sd_pl) = ising_posteriors
    kernel = ExchangeKernel(ising_model, aux_sampler=exact_ising_sampler)
    mcmc = MCMC(kernel, num_warmup=500, num_samples=4000, progress_bar=False)
    mcmc.run(jax.random.key(1), ising_data)
    J = mcmc.get_samples(group_by_chain=True)["J"]
    assert J.shape == (1, 4000)
    ess = check_within_mc_error(J, m_exact, sd_exact, "exchange")
    assert 0.15 < float(mcmc.last_state.mean_accept_prob) < 0.6
    # the pseudo-likelihood posterior is miscalibrated: its sd is more than 25% off the exact
    # one, while the exchange sd is within ~10% (its MC error at this ESS) of the exact sd
    assert sd_pl / sd_exact > 1.25, (sd_pl, sd_exact)
    sd_exchange = float(np.std(np.asarray(J)))
    assert abs(sd_exchange - sd_exact) < 0.5 * abs(sd_pl - sd_exact), (sd_exchange, sd_pl)
    assert 4 * math.sqrt(1 / (2 * ess)) + 0.02 < 0.25


def test_exchange_print_summary_vectorized_chains_and_arviz(ising_data, capsys):
    kernel = ExchangeKernel(ising_model, aux_sampler=exact_ising_sampler)
    mcmc = MCMC(kernel, num_warmup=100, num_samples=200, num_chains=2,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.key(2), ising_data)
    assert mcmc.get_samples(group_by_chain=True)["J"].shape == (2, 200)
    mcmc.print_summary()
    assert "J" in capsys.readouterr().out
    az = pytest.importorskip("arviz")
    idata = az.from_numpyro(mcmc)
    assert idata.posterior["J"].shape == (2, 200)


def test_exchange_enumerate_sampler_3x3():
    """aux_sampler='enumerate' (exact, 512 states) on a 3x3 lattice vs the grid posterior."""
    ising = Ising((3, 3))
    configs = all_configurations((3, 3))
    bonds = ising.bond_sum(configs)
    data = configs[jax.random.categorical(jax.random.key(3), 0.3 * bonds, shape=(20,))]

    def model(spins):
        J = numpyro.sample("J", dist.Normal(0.0, 1.0))
        with numpyro.plate("data", spins.shape[0]):
            numpyro.sample("s", ising.distribution({"J": J, "h": 0.0}), obs=spins)

    grid = jnp.linspace(-1.0, 1.5, 2001)
    log_Z = jax.vmap(lambda J: jax.scipy.special.logsumexp(J * bonds))(grid)
    exact = dist.Normal(0.0, 1.0).log_prob(grid) + grid * ising.bond_sum(data).sum() - 20 * log_Z
    m, sd = grid_mean_sd(grid, exact)
    mcmc = MCMC(ExchangeKernel(model, aux_sampler="enumerate"), num_warmup=300, num_samples=3000,
                progress_bar=False)
    mcmc.run(jax.random.key(4), data)
    check_within_mc_error(mcmc.get_samples(group_by_chain=True)["J"], m, sd, "enumerate")


# ----------------------------------------------------------------------------- Gaussian EBM

M0, K0, A0, B0 = 0.0, 0.5, 2.0, 2.0


def gaussian_model(x):
    tau = numpyro.sample("tau", dist.Gamma(A0, B0))
    mu = numpyro.sample("mu", dist.Normal(M0, 1.0 / jnp.sqrt(K0 * tau)))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("x", Unnormalized(lambda v: 0.5 * tau * (v - mu) ** 2), obs=x)


def exact_gaussian_sampler(rng_key, params, y):
    return params["mu"] + jax.random.normal(rng_key, y.shape) / jnp.sqrt(params["tau"])


def test_exchange_gaussian_ebm_matches_normal_gamma_posterior():
    x = 1.5 + 0.7 * jax.random.normal(jax.random.key(5), (15,))
    n, xbar = x.shape[0], float(x.mean())
    k_n, a_n = K0 + n, A0 + n / 2
    m_n = (K0 * M0 + n * xbar) / k_n
    b_n = B0 + 0.5 * float(((x - xbar) ** 2).sum()) + K0 * n * (xbar - M0) ** 2 / (2 * k_n)
    kernel = ExchangeKernel(gaussian_model, aux_sampler=exact_gaussian_sampler)
    mcmc = MCMC(kernel, num_warmup=1000, num_samples=8000, progress_bar=False)
    mcmc.run(jax.random.key(6), x)
    samples = mcmc.get_samples(group_by_chain=True)
    check_within_mc_error(samples["mu"], m_n, math.sqrt(b_n / (k_n * (a_n - 1))), "mu")
    check_within_mc_error(samples["tau"], a_n / b_n, math.sqrt(a_n) / b_n, "tau")


# ----------------------------------------------------------------------------- errors


def test_exchange_errors():
    x = jnp.ones(5)
    # a likelihood without a sampler: names the site and the fix
    with pytest.raises(ValueError, match=r"site 'x' has no sampler.*aux_sampler"):
        MCMC(ExchangeKernel(gaussian_model), num_warmup=1, num_samples=1,
             progress_bar=False).run(jax.random.key(0), x)

    def plain(x):
        mu = numpyro.sample("mu", dist.Normal())
        numpyro.sample("x", dist.Normal(mu), obs=x)

    with pytest.raises(ValueError, match="no observed Unnormalized site"):
        MCMC(ExchangeKernel(plain), num_warmup=1, num_samples=1,
             progress_bar=False).run(jax.random.key(0), x)
    with pytest.raises(ValueError, match="`site`='y'"):
        MCMC(ExchangeKernel(gaussian_model, site="y", aux_sampler=exact_gaussian_sampler),
             num_warmup=1, num_samples=1, progress_bar=False).run(jax.random.key(0), x)
    with pytest.raises(ValueError, match="enumerate.*finite discrete support"):
        MCMC(ExchangeKernel(gaussian_model, aux_sampler="enumerate"), num_warmup=1,
             num_samples=1, progress_bar=False).run(jax.random.key(0), x)
    with pytest.raises(ValueError, match="returned shape"):
        MCMC(ExchangeKernel(gaussian_model, aux_sampler=lambda k, p, y: y[:2]), num_warmup=1,
             num_samples=1, progress_bar=False).run(jax.random.key(0), x)
    with pytest.raises(ValueError, match="aux_sampler"):
        ExchangeKernel(gaussian_model, aux_sampler="perfect")
    with pytest.raises(ValueError, match="num_aux_steps"):
        ExchangeKernel(gaussian_model, num_aux_steps=0)
    with pytest.raises(ValueError, match="aux_init"):
        ExchangeKernel(gaussian_model, aux_init="prior")
    with pytest.raises(ValueError, match="step_size"):
        ExchangeKernel(gaussian_model, step_size=-1.0)
    with pytest.raises(TypeError, match="proposal"):
        ExchangeKernel(gaussian_model, proposal=3)
    assert numpyro_ebm.ExchangeKernel is ExchangeKernel


# ----------------------------------------------------------------------------- approximate


@pytest.mark.slow
@pytest.mark.parametrize("aux_init", ["data", "base"])
def test_approximate_exchange_ising_matches_exact_posterior(ising_data, ising_posteriors, aux_init):
    """The default auxiliary sampler: 30 checkerboard Gibbs sweeps of the site's own kernel per
    draw (the approximate exchange algorithm); at J ~ 0.4 on 4x4 its bias is below MC error."""
    (m_exact, sd_exact), _ = ising_posteriors
    kernel = ExchangeKernel(ising_model, num_aux_steps=30, aux_init=aux_init)
    mcmc = MCMC(kernel, num_warmup=500, num_samples=6000, progress_bar=False)
    mcmc.run(jax.random.key(7), ising_data)
    check_within_mc_error(mcmc.get_samples(group_by_chain=True)["J"], m_exact, sd_exact, aux_init)


# ----------------------------------------------------------------------------- perfect sampling


@pytest.mark.parametrize("J, h", [(0.5, 0.2), pytest.param(-0.5, 0.2, marks=pytest.mark.slow)])
def test_ising_cftp_matches_exact_distribution(J, h):
    """Chi-square of 10000 CFTP draws of a 3x3 open lattice over the 512 states (cells with an
    expected count below 10 pooled) against the exact probabilities, and no NaN (every draw
    coalesced); ferromagnetic and antiferromagnetic (sublattice flip) couplings."""
    ising = Ising((3, 3), periodic=False)
    configs = all_configurations((3, 3))
    probs = np.asarray(jax.nn.softmax(-ising.energy({"J": J, "h": h}, configs)), np.float64)
    num = 10000
    s = jax.jit(lambda k: ising_cftp(k, ising, {"J": J, "h": h}, num))(jax.random.key(8))
    assert s.shape == (num, 3, 3) and not bool(jnp.isnan(s).any())
    code = np.asarray(((s.reshape(num, 9) > 0) * (2 ** jnp.arange(9))).sum(-1))
    counts = np.bincount(code, minlength=512)
    expected = probs * num
    big = expected >= 10
    c = np.append(counts[big], counts[~big].sum())
    e = np.append(expected[big], expected[~big].sum())
    dof = len(e) - 1
    chi2 = float(((c - e) ** 2 / e).sum())
    assert abs(chi2 - dof) < 4 * math.sqrt(2 * dof), (chi2, dof)


def test_ising_cftp_errors():
    with pytest.raises(ValueError, match="num_samples"):
        ising_cftp(jax.random.key(0), ISING, {"J": 0.3, "h": 0.0}, 0)
    # a negative J on a non-bipartite lattice has no monotone coupling here: NaN draws
    odd = Ising((3, 3), periodic=True)
    assert bool(jnp.isnan(ising_cftp(jax.random.key(0), odd, {"J": -0.3, "h": 0.0}, 2)).all())


@pytest.mark.slow
def test_exchange_with_cftp_aux_matches_exact_posterior(ising_data, ising_posteriors):
    (m_exact, sd_exact), _ = ising_posteriors

    def cftp_sampler(rng_key, params, y):
        return ising_cftp(rng_key, ISING, {"J": params["J"], "h": 0.0}, y.shape[0])

    # CFTP coalesces slowly in the ordered phase (J > ~0.6 on this 4x4 torus: NaN draws past
    # max_sweeps, rejected); start at the posterior bulk so that the random walk never goes there
    kernel = ExchangeKernel(ising_model, aux_sampler=cftp_sampler,
                            init_strategy=init_to_value(values={"J": 0.4}))
    mcmc = MCMC(kernel, num_warmup=500, num_samples=4000, progress_bar=False)
    mcmc.run(jax.random.key(9), ising_data)
    check_within_mc_error(mcmc.get_samples(group_by_chain=True)["J"], m_exact, sd_exact, "cftp")
