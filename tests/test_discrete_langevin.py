"""Discrete Langevin (DMALA / DULA) and categorical Gibbs-with-gradients against exact
enumeration: a 3x3 Ising torus (512 states, spins and {0, 1}) and a 3-state Potts model on 6
nodes (729 states).

* Exact transition matrices (DMALA, DULA): the proposal of every state is enumerated with
  ``proposal_log_probs``; DMALA must leave the exact distribution invariant to float precision;
  DULA's stationary law is off and approaches it as the step size shrinks.
* Chains (``sample_chains``, many chains): mean energy and marginals within 5 standard errors,
  the standard error from the spread of the per-chain means (chains are independent).
* One-step invariance of categorical GWG: draws from the exact law, one step, chi-square.
"""

import itertools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import numpyro_ebm
from numpyro_ebm.models import Ising, Potts
from numpyro_ebm.sampling.discrete_langevin import (
    DiscreteLangevinState,
    discrete_langevin,
    proposal_log_probs,
)
from numpyro_ebm.sampling.gibbs_with_gradients import gibbs_with_gradients

ISING = Ising((3, 3), periodic=True)
ISING_PARAMS = {"J": jnp.asarray(0.3), "h": jnp.asarray(0.1)}
SPINS = np.array(list(itertools.product([-1.0, 1.0], repeat=9)), np.float32).reshape(-1, 3, 3)

ADJ = np.zeros((6, 6), np.float32)
for i, j in [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 0), (0, 3)]:
    ADJ[i, j] = ADJ[j, i] = 1.0
POTTS = Potts(3, ADJ)
POTTS_PARAMS = {"J": jnp.asarray(0.6), "h": jnp.asarray([0.3, 0.0, -0.2])}
STATES = np.array(list(itertools.product(range(3), repeat=6)), np.int32)


def ising_logp(s):
    return -ISING.energy(ISING_PARAMS, s)


def potts_logp_onehot(y):
    return POTTS.logdensity_onehot(POTTS_PARAMS, y)


def exact(logp_all):
    logp = np.asarray(logp_all, np.float64)
    p = np.exp(logp - logp.max())
    return p / p.sum()


PI_ISING = exact(jax.vmap(ising_logp)(SPINS))
PI_POTTS = exact(jax.vmap(lambda x: POTTS.logdensity(POTTS_PARAMS, x))(STATES))


def transition_matrix(index_states, logp, grads, step_size, values, adjusted):
    """Exact ``(S, S)`` transition matrix of DMALA / DULA over enumerated states (``index_states``
    ``(S, N)`` value indices, ``logp`` ``(S,)``, ``grads`` per state)."""
    log_q = np.asarray(
        jax.vmap(lambda i, g: proposal_log_probs(i, g, step_size, values))(
            jnp.asarray(index_states), grads
        ),
        np.float64,
    )  # (S, N, K)
    n = index_states.shape[1]
    # log q(x' | x) = sum_i log_q[x, i, x'_i]
    log_fwd = sum(log_q[:, i, index_states[:, i]] for i in range(n))  # (S, S)
    if not adjusted:
        return np.exp(log_fwd)
    logp = np.asarray(logp, np.float64)
    log_ratio = logp[None, :] - logp[:, None] + log_fwd.T - log_fwd
    p = np.exp(log_fwd + np.minimum(log_ratio, 0.0))
    np.fill_diagonal(p, 0.0)
    np.fill_diagonal(p, 1.0 - p.sum(1))
    return p


def ising_matrix(step_size, adjusted):
    logp, grads = jax.vmap(jax.value_and_grad(ising_logp))(jnp.asarray(SPINS))
    index = (SPINS.reshape(-1, 9) > 0).astype(np.int32)
    return transition_matrix(index, logp, grads.reshape(-1, 9), step_size, (-1.0, 1.0), adjusted)


def potts_matrix(step_size, adjusted):
    onehot = jax.nn.one_hot(jnp.asarray(STATES), 3)
    logp, grads = jax.vmap(jax.value_and_grad(potts_logp_onehot))(onehot)
    return transition_matrix(STATES, logp, grads, step_size, None, adjusted)


BM_W = np.triu(np.asarray(jax.random.normal(jax.random.key(3), (8, 8))) * 0.5, 1)
BM_W = BM_W + BM_W.T
BM_B = np.linspace(-0.5, 0.5, 8).astype(np.float32)
BINARY = np.array(list(itertools.product([0.0, 1.0], repeat=8)), np.float32)


def bm_logp(x):
    return 0.5 * x @ BM_W @ x + BM_B @ x


PI_BM = exact(jax.vmap(bm_logp)(BINARY))


def bm_matrix(step_size, adjusted):
    logp, grads = jax.vmap(jax.value_and_grad(bm_logp))(jnp.asarray(BINARY))
    return transition_matrix(BINARY.astype(np.int32), logp, grads, step_size, (0.0, 1.0), adjusted)


def stationary(p):
    """The stationary law of ``p``: ``pi (P - I) = 0`` with one equation swapped for sum = 1."""
    a = p.T - np.eye(p.shape[0])
    a[-1] = 1.0
    b = np.zeros(p.shape[0])
    b[-1] = 1.0
    return np.linalg.solve(a, b)


@pytest.mark.parametrize(
    "matrix, pi", [(ising_matrix, PI_ISING), (bm_matrix, PI_BM), (potts_matrix, PI_POTTS)]
)
def test_dmala_exact_transition_matrix_is_invariant(matrix, pi):
    for step_size in (0.2, 1.0, 3.0):
        p = matrix(step_size, adjusted=True)
        assert np.all(p >= -1e-12)
        np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-9)
        np.testing.assert_allclose(pi @ p, pi, atol=1e-9, rtol=1e-6)
        flows = pi[:, None] * p  # detailed balance
        np.testing.assert_allclose(flows, flows.T, atol=1e-12)


@pytest.mark.parametrize(
    "matrix, pi, steps",
    [(ising_matrix, PI_ISING, (2.0, 1.0, 0.5)), (potts_matrix, PI_POTTS, (2.0, 0.5, 0.25))],
)
def test_dula_is_biased_and_bias_shrinks_with_step_size(matrix, pi, steps):
    """Total variation between DULA's exact stationary law and the target (the proposal moves a
    site with probability ~exp(-|dx|^2 / 2 alpha), so smaller steps than these hardly move)."""
    tv = [0.5 * np.abs(stationary(matrix(a, adjusted=False)) - pi).sum() for a in steps]
    assert tv[0] > 0.1  # biased at a large step
    assert tv[0] > tv[1] > tv[2]  # ... less so at smaller steps


def _chain_check(result, statistic, exact_value):
    """|mean - exact| < 5 standard errors, the error from the per-chain means."""
    per_chain = np.asarray(statistic(result.samples)).mean(0)  # (num_chains, ...)
    mean = per_chain.mean(0)
    stderr = per_chain.std(0, ddof=1) / np.sqrt(per_chain.shape[0])
    assert np.all(np.abs(mean - exact_value) < 5 * stderr + 1e-6), (mean, exact_value, stderr)


def test_spin_ising_chains_match_enumeration():
    init = ISING.init_spins(jax.random.key(1), 256)
    kernel = partial(discrete_langevin, step_size=2.0, values=(-1, 1))
    result = numpyro_ebm.sample_chains(
        jax.random.key(0), ising_logp, kernel, init, num_steps=120, num_samples=80
    )
    energy = -np.asarray(jax.vmap(ising_logp)(SPINS))
    _chain_check(result, lambda s: ISING.energy(ISING_PARAMS, s), PI_ISING @ energy)
    _chain_check(result, ISING.magnetization, PI_ISING @ SPINS.reshape(-1, 9).mean(1))
    assert isinstance(result.state, DiscreteLangevinState)
    assert result.state.logdensity_grad.shape == (256, 3, 3)
    np.testing.assert_allclose(
        result.logdensity, jax.vmap(ising_logp)(result.positions), rtol=1e-5, atol=1e-5
    )
    assert 0.5 < float(result.acceptance_rate.mean()) < 0.95


@pytest.mark.parametrize(
    "make",
    [
        lambda: discrete_langevin(potts_logp_onehot, 1.0, num_categories=3),
        pytest.param(  # GWG's categorical kernel is also checked by the one-step test below
            lambda: gibbs_with_gradients(potts_logp_onehot, num_flips=3, num_categories=3),
            marks=pytest.mark.slow,
        ),
    ],
)
def test_potts_chains_match_enumeration(make):
    init = POTTS.init_states(jax.random.key(1), 256, dtype=jnp.int32)
    result = numpyro_ebm.sample_chains(
        jax.random.key(0), None, make(), init, num_steps=120, num_samples=80
    )
    assert result.samples.dtype == jnp.int32
    assert result.state.logdensity_grad.shape == (256, 6, 3)
    onehot = np.eye(3)[STATES]  # (729, 6, 3)
    _chain_check(result, lambda x: jax.nn.one_hot(x, 3), np.einsum("s,snk->nk", PI_POTTS, onehot))
    energy = -np.asarray(jax.vmap(lambda x: POTTS.logdensity(POTTS_PARAMS, x))(STATES))
    _chain_check(result, lambda x: POTTS.energy(POTTS_PARAMS, x), PI_POTTS @ energy)
    np.testing.assert_allclose(
        result.logdensity, POTTS.logdensity(POTTS_PARAMS, result.positions), rtol=1e-5, atol=1e-5
    )


def test_categorical_gwg_one_step_invariance():
    """Draws from the exact law, one step: the chi-square statistic stays below its 0.999
    quantile (and a wrong kernel, DULA at a large step, is caught by the same test)."""
    n = 30_000
    x0 = jnp.asarray(STATES[np.random.default_rng(5).choice(len(STATES), n, p=PI_POTTS)])

    def chi2_after_one_step(algorithm):
        keys = jax.random.split(jax.random.key(6), n)
        new, info = jax.jit(jax.vmap(lambda k, x: algorithm.step(k, algorithm.init(x))))(keys, x0)
        codes = np.asarray(new.position) @ (3 ** np.arange(5, -1, -1))
        counts = np.bincount(codes, minlength=len(STATES))
        expected = n * PI_POTTS
        return ((counts - expected) ** 2 / expected).sum(), info

    limit = stats.chi2.ppf(0.999, len(STATES) - 1)
    chi2, info = chi2_after_one_step(
        gibbs_with_gradients(potts_logp_onehot, num_flips=2, num_categories=3)
    )
    assert chi2 < limit
    assert 0.2 < float(info.acceptance_rate.mean()) <= 1.0
    chi2, info = chi2_after_one_step(
        discrete_langevin(potts_logp_onehot, 5.0, num_categories=3, adjusted=False)
    )
    assert chi2 > limit  # DULA at a large step: caught
    assert bool(info.is_accepted.all()) and float(info.acceptance_rate.min()) == 1.0
    assert float(info.flip_rate.mean()) > 0.2


def test_bad_inputs():
    f = ising_logp
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="step_size"):
            discrete_langevin(f, bad, values=(-1, 1))
    with pytest.raises(TypeError, match="step_size"):
        discrete_langevin(f, "big", values=(-1, 1))
    with pytest.raises(ValueError, match="not both"):
        discrete_langevin(f, 0.5, values=(0, 1), num_categories=3)
    with pytest.raises(ValueError, match="num_categories"):
        discrete_langevin(f, 0.5, num_categories=1)
    with pytest.raises(ValueError, match="values"):
        discrete_langevin(f, 0.5, values=(1, 1))
    with pytest.raises(TypeError, match="adjusted"):
        discrete_langevin(f, 0.5, adjusted="no")
    with pytest.raises(TypeError, match="float array"):
        discrete_langevin(f, 0.5, values=(-1, 1)).init(jnp.ones((3, 3), jnp.int32))
    with pytest.raises(ValueError, match="outside the allowed values"):
        discrete_langevin(f, 0.5, values=(-1, 1)).init(jnp.zeros((3, 3)))
    with pytest.raises(ValueError, match="outside the allowed values"):
        discrete_langevin(potts_logp_onehot, 0.5, num_categories=3).init(jnp.full(6, 3))
    with pytest.raises(ValueError, match="outside the allowed values"):
        gibbs_with_gradients(potts_logp_onehot, num_categories=3).init(jnp.full(6, 0.5))
    with pytest.raises(TypeError, match="single array"):
        discrete_langevin(potts_logp_onehot, 0.5, num_categories=3).init([0, 1])
    with pytest.raises(ValueError, match="num_categories=K"):
        gibbs_with_gradients(f, values=(0, 1, 2))
    with pytest.raises(ValueError, match="event_shape, q"):
        POTTS.logdensity_onehot(POTTS_PARAMS, jnp.zeros((6, 4)))


def test_categorical_factory_form_checks_the_density_through_the_one_hot_embedding():
    # sample_chains checks the density's shape on one chain's position; for categorical kernels
    # through the one-hot embedding the kernel passes to it (so the partial form works too).
    init = POTTS.init_states(jax.random.key(1), 8, dtype=jnp.int32)
    for kernel in (
        partial(discrete_langevin, step_size=1.0, num_categories=3),
        partial(gibbs_with_gradients, num_flips=2, num_categories=3),
    ):
        result = numpyro_ebm.sample_chains(jax.random.key(0), potts_logp_onehot, kernel, init, 3)
        assert result.positions.shape == (8, 6) and result.positions.dtype == jnp.int32
    with pytest.raises(ValueError, match="init_positions"):  # a density of the wrong event shape
        numpyro_ebm.sample_chains(
            jax.random.key(0), lambda y: potts_logp_onehot(y[:, :2]),
            partial(discrete_langevin, step_size=1.0, num_categories=3), init, 3,
        )
