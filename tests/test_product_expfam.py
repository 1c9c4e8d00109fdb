"""Products of experts (closed-form product of Gaussians, mixed experts) and exponential families
(moment matching = CD, on a Gaussian and an Ising model, trained through SVI)."""

import itertools
from functools import partial

import blackjax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import pytest
from numpyro.infer import SVI

from numpyro_ebm import PersistentContrastiveDivergence, sample_chains
from numpyro_ebm.estimators import ContrastiveDivergence, contrastive_divergence_loss, no_guide
from numpyro_ebm.evaluation.partition import logz_quadrature
from numpyro_ebm.models.expfam import ExponentialFamily, gaussian_statistics
from numpyro_ebm.models.product import ProductOfExperts, gaussian_product
from numpyro_ebm.sampling.gibbs import gibbs

# ----------------------------------------------------------------------------- product of experts

MEANS = jnp.array([[0.0, 1.0], [2.0, -1.0], [1.0, 1.0]])
COVS = jnp.array([[[1.0, 0.3], [0.3, 0.5]], [[2.0, -0.5], [-0.5, 1.0]], [[0.7, 0.0], [0.0, 3.0]]])


def gaussian_experts():
    return [dist.MultivariateNormal(m, c) for m, c in zip(MEANS, COVS)]


def test_product_of_gaussians_closed_form():
    poe = ProductOfExperts(*gaussian_experts(), event_shape=(2,))
    mean, cov, log_Z = gaussian_product(MEANS, COVS)
    # precision adds, precision-weighted mean
    prec = sum(jnp.linalg.inv(c) for c in COVS)
    np.testing.assert_allclose(jnp.linalg.inv(cov), prec, rtol=1e-5)
    np.testing.assert_allclose(
        prec @ mean, sum(jnp.linalg.inv(c) @ m for m, c in zip(MEANS, COVS)), rtol=1e-5)
    # the energy is the closed-form Gaussian's up to the constant log Z
    x = 2.0 * jax.random.normal(jax.random.key(0), (50, 2))
    closed = -dist.MultivariateNormal(mean, cov).log_prob(x)
    np.testing.assert_allclose(poe.energy({}, x) - closed, jnp.full(50, -log_Z), rtol=1e-4,
                               atol=1e-4)
    # log Z by quadrature
    lz = logz_quadrature(poe, jnp.array([-8.0, -8.0]), jnp.array([8.0, 8.0]), 200)
    np.testing.assert_allclose(lz, log_Z, atol=1e-3)
    # MALA samples of the product: mean within 4 standard errors of the closed form
    n = 1000
    res = sample_chains(jax.random.key(1), poe.distribution({}),
                        partial(blackjax.mala, step_size=0.1), jnp.zeros((n, 2)), 150)
    se = jnp.sqrt(jnp.diag(cov) / n)
    np.testing.assert_array_less(jnp.abs(res.positions.mean(0) - mean), 4 * se)


class Quadratic(nn.Module):
    @nn.compact
    def __call__(self, x):
        return 0.5 * nn.Dense(1, use_bias=False)(x**2)


def test_mixed_experts_and_errors():
    """A function, a distribution, an exponential family and a Flax module add their energies."""
    fn = lambda x: 0.5 * jnp.sum(x**2, -1)
    normal = dist.Normal(1.0, 2.0).expand([2]).to_event(1)
    fam = ExponentialFamily(lambda x: x, theta=jnp.array([0.3, -0.2]), event_shape=(2,))
    fam_params = fam.init_params()
    module = Quadratic()
    variables = module.init(jax.random.key(0), jnp.ones((1, 2)))
    net = partial(module.apply, variables)
    poe = ProductOfExperts(fn, normal, fam.distribution(fam_params), net)
    assert len(poe) == 4
    x = jax.random.normal(jax.random.key(1), (7, 2))
    expected = fn(x) - normal.log_prob(x) + fam.energy(fam_params, x) + net(x)[..., 0]
    np.testing.assert_allclose(poe(x), expected, rtol=1e-5)
    np.testing.assert_allclose(poe.energy({}, x), expected, rtol=1e-5)
    np.testing.assert_allclose(poe.logdensity({}, x), -expected, rtol=1e-5)
    # nested products flatten by energy
    np.testing.assert_allclose(ProductOfExperts(poe, fn)(x), expected + fn(x), rtol=1e-5)
    with pytest.raises(TypeError, match="unbound"):
        ProductOfExperts(module)
    with pytest.raises(TypeError, match=r"distribution\(params\)"):
        ProductOfExperts(fam)  # a model takes its parameters explicitly
    with pytest.raises(TypeError, match="expert"):
        ProductOfExperts(3.0)
    with pytest.raises(ValueError, match="at least one"):
        ProductOfExperts()


# ----------------------------------------------------------------------------- exponential family


def test_cd_gradient_is_moment_matching():
    """grad of the CD surrogate on fixed data and samples == -(data moments - sample moments)."""
    fam = ExponentialFamily(gaussian_statistics, theta=jnp.array([0.5, -0.3]))
    data = jax.random.normal(jax.random.key(0), (100,))
    samples = 2.0 + jax.random.normal(jax.random.key(1), (80,))

    def cd(theta):
        return contrastive_divergence_loss(
            fam.energy({"theta": theta}, data),
            fam.energy({"theta": theta}, jax.lax.stop_gradient(samples)))

    np.testing.assert_allclose(jax.grad(cd)(fam.theta), -fam.log_likelihood_gradient(data, samples),
                               rtol=1e-5)


def gaussian_ml_theta(data):
    mu, var = float(np.mean(data)), float(np.var(data))
    return np.array([mu / var, -0.5 / var])


@pytest.mark.slow  # 19 s; test_cd_gradient_is_moment_matching checks the gradient exactly
def test_gaussian_moment_matching_and_cd_recover_ml():
    data = 1.5 + 0.7 * jax.random.normal(jax.random.key(0), (5000,))
    theta_ml = gaussian_ml_theta(np.asarray(data))
    fam = ExponentialFamily(gaussian_statistics, theta=jnp.array([0.0, -0.5]))
    kernel = partial(blackjax.mala, step_size=0.1)
    schedule = optax.cosine_decay_schedule(0.3, 600, 0.02)
    # persistent moment matching = PCD with SGD through SVI: theta += eta (T_data - T_chains)
    pcd = PersistentContrastiveDivergence(kernel, num_steps=5, num_chains=1000, reinit_prob=0.0)
    svi = SVI(fam.model, pcd.make_guide(fam.model), optax.sgd(schedule), loss=pcd)
    mm = svi.run(jax.random.key(1), 600, data, progress_bar=False)
    theta = fam.get_params(mm.params)["theta"]
    # Monte Carlo error of theta: the ML estimator's own spread is sqrt(I^-1 / n) per chain draw
    # at the last (small) step; tolerance 0.08 on each natural parameter (theta_ml ~ (3.1, -1.0))
    np.testing.assert_allclose(theta, theta_ml, atol=0.08, rtol=0.04)
    # CD through SVI on the same family: the same fixed point
    cd = ContrastiveDivergence(kernel, num_steps=5)
    svi = SVI(fam.model, no_guide, optax.adam(optax.cosine_decay_schedule(0.05, 1500, 0.02)),
              loss=cd)
    res = svi.run(jax.random.key(2), 1500, data, subsample_size=500, progress_bar=False)
    np.testing.assert_allclose(fam.get_params(res.params)["theta"], theta_ml, atol=0.1, rtol=0.05)


def ising_statistics(s):
    """T(s) = (sum of nearest-neighbour products, sum of spins) on a periodic 4x4 lattice."""
    bonds = s * jnp.roll(s, 1, -1) + s * jnp.roll(s, 1, -2)
    return jnp.stack([bonds.sum((-1, -2)), s.sum((-1, -2))], -1)


@pytest.fixture(scope="module")
def ising_exact():
    states = jnp.asarray(np.array(list(itertools.product([-1.0, 1.0], repeat=16)), np.float32))
    return states.reshape(-1, 4, 4)


@pytest.mark.slow  # long statistical test: `pytest -m slow`
def test_ising_moment_matching_recovers_coupling(ising_exact):
    """Learn (J, h) from exact samples of a known 4x4 Ising model (beta J = 0.3, beta h = 0.1)."""
    theta_true = jnp.array([0.3, 0.1])
    fam = ExponentialFamily(ising_statistics, theta=jnp.zeros(2), event_shape=(4, 4))
    T = fam.statistics(ising_exact)
    logits = T @ theta_true
    n = 4000
    idx = jax.random.categorical(jax.random.key(0), logits, shape=(n,))
    data = ising_exact[idx]
    # Fisher information = Cov_theta(T), exactly: the ML estimator's standard error
    p = jax.nn.softmax(logits)
    mean_T = p @ T
    fisher = (p[:, None] * (T - mean_T)).T @ (T - mean_T)
    se = jnp.sqrt(jnp.diag(jnp.linalg.inv(fisher)) / n)
    # the CD surrogate on the Ising family has the moment-matching gradient there too
    samples = ising_exact[jax.random.categorical(jax.random.key(1), logits, shape=(500,))]
    g = jax.grad(lambda th: contrastive_divergence_loss(fam.energy({"theta": th}, data),
                                                        fam.energy({"theta": th}, samples)))(
        theta_true)
    np.testing.assert_allclose(g, -fam.log_likelihood_gradient(data, samples), rtol=1e-4,
                               atol=1e-3)
    # persistent chains started at random data rows, one Gibbs sweep per SGD update, via SVI
    data_rows = dist.MixtureSameFamily(dist.Categorical(logits=jnp.zeros(n)),
                                       dist.Delta(data, event_dim=2))
    pcd = PersistentContrastiveDivergence(partial(gibbs, values=(-1.0, 1.0)), num_steps=1,
                                          num_chains=500, reinit_prob=0.0, init_dist=data_rows)
    svi = SVI(fam.model, pcd.guide, optax.sgd(optax.cosine_decay_schedule(0.02, 300, 0.05)),
              loss=pcd)
    mm = svi.run(jax.random.key(2), 300, data, progress_bar=False)
    theta = fam.get_params(mm.params)["theta"]
    # data noise (se) plus the chains' Monte Carlo noise at the end (~ se as well): 5 se
    err = np.abs(np.asarray(theta - theta_true))
    assert np.all(err < 5 * np.asarray(se) + 0.01), (theta, theta_true, se)
    assert mm.losses.shape == (300,)
