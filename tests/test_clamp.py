"""Clamped sampling (issue 12, section 2): clamped block Gibbs of the RBM, Ising and Potts
against the exact conditional by enumeration; clamp() of a continuous EBM as a NumPyro site under
NUTS against the closed-form Gaussian conditional; bad masks."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from numpy.testing import assert_allclose
from numpyro.infer import MCMC, NUTS

from numpyro_ebm import Unnormalized, clamp, clamped_kernel, embed, sample_chains
from numpyro_ebm.models import RBM, Ising, Potts


def enumerate_free(mask, values, states):
    """All full configurations with the clamped entries at ``values``: ``(C, *mask.shape)``."""
    free = int((~mask).sum())
    z = jnp.asarray(np.array(list(itertools.product(states, repeat=free)), np.float32))
    return embed(z, mask, values)


def check_marginals(samples, configs, logw, tol_sd=4.5):
    w = jnp.exp(logw - jax.nn.logsumexp(logw))
    exact = np.asarray(jnp.einsum("c,c...->...", w, configs))
    est = np.asarray(samples).mean(0)
    var = np.asarray(jnp.einsum("c,c...->...", w, configs**2)) - exact**2
    se = np.sqrt(np.maximum(var, 1e-6) / samples.shape[0])
    assert np.all(np.abs(est - exact) < tol_sd * se + 1e-3), (est, exact, se)


def test_clamped_rbm_block_gibbs_matches_the_exact_conditional():
    rbm = RBM(8, 4)
    keys = jax.random.split(jax.random.key(0), 3)
    params = {"W": 1.0 * jax.random.normal(keys[0], (8, 4)), "a": 0.3 * jax.random.normal(
        keys[1], (8,)), "b": 0.3 * jax.random.normal(keys[2], (4,))}
    mask = np.arange(8) < 4
    values = jnp.array([1.0, 0.0, 1.0, 1.0, 0, 0, 0, 0])
    algorithm = clamped_kernel(rbm, params, mask, values)
    init = jnp.zeros((4000, 8))
    res = sample_chains(jax.random.key(1), None, algorithm, init, 25)
    assert_allclose(res.positions[:, :4], jnp.broadcast_to(values[:4], (4000, 4)))
    configs = enumerate_free(mask, values, (0, 1))
    check_marginals(res.positions, configs, -rbm.energy(params, configs))


def test_clamped_ising_and_potts_colour_blocks_match_the_exact_conditional():
    ising = Ising((3, 3))  # a 3-colour torus: the reset after every colour class matters
    params = ising.init_params(beta=0.6, field=0.1)
    mask = np.zeros((3, 3), bool)
    mask[0] = True
    values = jnp.array([[1.0, -1.0, 1.0]] * 3)
    res = sample_chains(jax.random.key(2), None, clamped_kernel(ising, params, mask, values),
                        ising.init_spins(jax.random.key(3), 4000), 25)
    assert_allclose(res.positions[:, 0], jnp.broadcast_to(values[0], (4000, 3)))
    configs = enumerate_free(mask, values, (-1, 1))
    check_marginals(res.positions, configs, -ising.energy(params, configs))

    potts = Potts(3, shape=(2, 3), periodic=False)
    params = potts.init_params(beta=0.9, field=jnp.array([0.2, 0.0, -0.2]))
    mask = np.array([[True, False, False], [False, False, True]])
    values = jnp.array([[2.0, 0, 0], [0, 0, 1.0]])
    res = sample_chains(jax.random.key(4), None, clamped_kernel(potts, params, mask, values),
                        potts.init_states(jax.random.key(5), 4000), 25)
    configs = enumerate_free(mask, values, (0, 1, 2))
    logw = -potts.energy(params, configs)
    check_marginals(potts.one_hot(res.positions), potts.one_hot(configs), logw)


def test_clamp_of_a_continuous_site_under_nuts_is_the_gaussian_conditional():
    """A Gaussian EBM E(x) = x^T P x / 2 with x[:2] observed: clamp(...) as a latent NumPyro site
    under NUTS; the conditional of x[2:] is N(-P_FF^{-1} P_FC v, P_FF^{-1})."""
    a = jax.random.normal(jax.random.key(6), (4, 4))
    precision = a @ a.T + 4.0 * jnp.eye(4)
    ebm = Unnormalized(lambda x: 0.5 * jnp.einsum("...i,ij,...j->...", x, precision, x), (4,))
    mask = np.array([True, True, False, False])
    values = jnp.array([1.0, -2.0, 0.0, 0.0])
    site = clamp(ebm, mask, values)
    assert site.event_shape == (2,)

    def model():
        numpyro.sample("x_free", site)

    mcmc = MCMC(NUTS(model), num_warmup=300, num_samples=3000, progress_bar=False)
    mcmc.run(jax.random.key(7))
    z = mcmc.get_samples()["x_free"]
    cov = jnp.linalg.inv(precision[2:, 2:])
    mean = -cov @ precision[2:, :2] @ values[:2]
    assert np.all(np.abs(np.asarray(z.mean(0) - mean)) < 5 * np.sqrt(np.diag(cov) / 600))
    assert_allclose(jnp.cov(z.T), cov, rtol=0.2, atol=0.02)
    full = embed(z, mask, values)
    assert full.shape == (3000, 4) and bool(jnp.all(full[:, :2] == values[:2]))
    # the function form agrees with the distribution's log density
    f = clamp(lambda x: -ebm.energy(x), mask, values)
    assert_allclose(f(z[0]), site.log_prob(z[0]), rtol=1e-5)


def test_clamp_rejects_bad_masks_and_values():
    ebm = Unnormalized(lambda x: jnp.sum(x**2, -1), (4,))
    with pytest.raises(ValueError, match=r"`mask` has shape \(3,\); expected the event shape"):
        clamp(ebm, np.array([True, False, False]), 0.0)
    with pytest.raises(TypeError, match="boolean"):
        clamp(ebm, np.array([1, 0, 0, 0]), 0.0)
    with pytest.raises(ValueError, match="every coordinate"):
        clamp(ebm, np.ones(4, bool), 0.0)
    with pytest.raises(ValueError, match="`values`"):
        clamp(ebm, np.array([True, False, False, False]), jnp.zeros(3))
    with pytest.raises(ValueError, match="event shape"):
        clamped_kernel(RBM(4, 2), RBM(4, 2).init_params(), np.ones(3, bool), 0.0)
    with pytest.raises(TypeError, match="block Gibbs structure"):
        clamped_kernel(object(), {}, np.zeros(2, bool), 0.0)


def test_clamped_discrete_site_in_a_numpyro_model_under_ebm_gibbs():
    """Observing part of a discrete EBM's event: clamp(ising.distribution(...)) as a latent site,
    run by EBMGibbs, gives the exact conditional of the free spins."""
    pytest.importorskip("numpyro.infer.gibbs", reason="EBMGibbs needs numpyro >= 0.22")
    from numpyro_ebm import EBMGibbs

    ising = Ising((3, 3))
    params = ising.init_params(beta=0.5, field=-0.1)
    mask = np.zeros((3, 3), bool)
    mask[:, 0] = True
    values = jnp.array([[1.0, 0, 0], [1.0, 0, 0], [-1.0, 0, 0]])
    site = clamp(ising.distribution(params), mask, values)

    def model():
        numpyro.sample("s_free", site)

    mcmc = MCMC(EBMGibbs(model=model), num_warmup=100, num_samples=4000, progress_bar=False)
    mcmc.run(jax.random.key(8))
    full = embed(mcmc.get_samples()["s_free"], mask, values)
    configs = enumerate_free(mask, values, (-1, 1))
    check_marginals(full[::4], configs, -ising.energy(params, configs))
