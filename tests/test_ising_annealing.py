"""The Ising model's own annealing path: AIS with its colour-block Gibbs kernels against exact
enumeration, the kernel's invariance on a non-bipartite torus, and the seams with the drivers.

Tolerances for AIS: 4 standard errors plus 0.005 nats. The slack covers what the error bar does
not: AIS is biased low by about stderr^2 / 2 (< 1e-3 here), and each log-weight is a float32 sum
of 1000 increments of size up to |E| * dbeta, whose rounding is below ~1e-3 for |E| <= 20. The
error bars are checked to be small (< 0.05) so the comparison has power: the defect this replaces
(a kernel that ignored the tempered density) was off by 2 nats on the 2x2 case.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
import scipy.stats

import numpyro_ebm
from numpyro_ebm import logz_ais
from numpyro_ebm.models import Ising

SLACK = 0.005


def _configs(shape):
    n = int(np.prod(shape))
    bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
    return jnp.asarray(2.0 * bits - 1.0, jnp.float32).reshape((-1,) + tuple(shape))


def _exact_log_z(ising, params):
    """log Z by brute force over all configurations (independent of log_partition)."""
    return float(jax.nn.logsumexp(-ising.energy(params, _configs(ising.shape))))


@pytest.mark.parametrize("shape", [(2, 2), pytest.param((3, 3), marks=pytest.mark.slow)])  # 14 s
def test_ais_on_the_annealing_path_matches_enumeration(shape):
    """Periodic 2x2 and 3x3 (the 3x3 torus is not bipartite: greedy colouring), beta 0.3, 0.6,
    0.8 with coupling 1, field 0 and 0.3: ``logz_ais(key, ising.annealing_path(params))`` (all
    six runs in one program, vmapped over the parameters) equals exact enumeration."""
    ising = Ising(shape)
    cases = [(beta, field) for beta in (0.3, 0.6, 0.8) for field in (0.0, 0.3)]
    params = [ising.init_params(beta=beta, field=field) for beta, field in cases]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *params)
    keys = jax.random.split(jax.random.key(0), len(cases))
    result = jax.vmap(lambda p, k: logz_ais(k, ising.annealing_path(p)))(stacked, keys)
    for i, case in enumerate(cases):
        exact = _exact_log_z(ising, params[i])
        np.testing.assert_allclose(ising.log_partition(params[i]), exact, rtol=1e-5)
        log_z, se = float(result.log_Z[i]), float(result.stderr[i])
        assert 0 < se < 0.05, (case, se)
        assert abs(log_z - exact) < 4 * se + SLACK, (case, log_z, exact, se)


def test_the_issue_case_by_every_route():
    """2x2 periodic, beta = 0.8: exact log Z = 7.103 (the issue); AIS through the path, through
    ``ising.logz_ais`` and through the distribution that carries the path."""
    ising = Ising((2, 2))
    params = ising.init_params(beta=0.8)
    exact = float(ising.log_partition(params))
    np.testing.assert_allclose(exact, 7.103, atol=5e-4)
    np.testing.assert_allclose(exact, _exact_log_z(ising, params), rtol=1e-6)
    for result in [
        ising.logz_ais(jax.random.key(1), params),
        logz_ais(jax.random.key(2), ising.distribution(params)),
        logz_ais(jax.random.key(3), ising.annealing_path(params), num_chains=512,
                 num_temperatures=500, num_steps=2),
    ]:
        assert 0 < float(result.stderr) < 0.05
        assert abs(float(result.log_Z) - exact) < 4 * float(result.stderr) + SLACK


def test_a_built_kernel_is_refused_as_a_kernel_factory():
    """``ising.kernel(params)`` samples exp(-E) only; AIS would anneal nothing with it."""
    ising = Ising((2, 2))
    params = ising.init_params(beta=0.8)
    base = dist.Bernoulli(probs=0.5 * jnp.ones((2, 2))).to_event(2)
    with pytest.raises(TypeError, match="factory"):
        logz_ais(jax.random.key(0), lambda s: ising.energy(params, s), base,
                 kernel=ising.kernel(params))
    with pytest.raises(TypeError, match="factory"):
        logz_ais(jax.random.key(0), ising.distribution(params), base, kernel=ising.kernel(params))


@pytest.mark.parametrize("shape,periodic", [((3, 3), True), ((4, 4), True), ((3, 4), False),
                                            ((5,), True)])
def test_path_densities_and_tracked_logdensity(shape, periodic):
    """f_0 = 0 with uniform exact base draws and log Z_0 = N log 2; f_1 = -E; the kernel's state
    holds f_beta of its position at init and after steps, at several betas."""
    ising = Ising(shape, periodic)
    params = ising.init_params(beta=0.7, field=0.2 * jnp.cos(jnp.arange(shape[-1])))
    path = ising.annealing_path(params)
    s = path.sample_base(jax.random.key(0), 4000)
    assert s.shape == (4000, *shape) and abs(float(s.mean())) < 0.03
    np.testing.assert_allclose(path.log_Z_base, ising.num_sites * np.log(2.0), rtol=1e-6)
    np.testing.assert_allclose(path.logdensity_fn(0.0, s[:5]), 0.0)
    np.testing.assert_allclose(path.logdensity_fn(1.0, s[:5]), -ising.energy(params, s[:5]))
    for beta in (0.0, 0.4, 1.0):
        algorithm = path.kernel(beta)
        state = algorithm.init(s[:16])
        np.testing.assert_allclose(state.logdensity, path.logdensity_fn(beta, s[:16]), atol=1e-5)
        for key in jax.random.split(jax.random.key(1), 3):
            state, info = algorithm.step(key, state)
            np.testing.assert_allclose(state.logdensity, path.logdensity_fn(beta, state.position),
                                       atol=1e-4)
        assert bool(jnp.all((info.flip_rate >= 0) & (info.flip_rate <= 1)))


def _level_statistic(ising, s):
    """(bond sum, magnetization) of each configuration as one integer label."""
    bonds = np.round(np.asarray(ising.bond_sum(s))).astype(int)
    magnet = np.round(np.asarray(ising.magnetization(s)) * ising.num_sites).astype(int)
    return bonds * 1000 + magnet


def _chi2(ising, params, positions, configs):
    """Pearson chi-square of the (bond sum, magnetization) histogram of ``positions`` against
    the exact distribution (levels with expected count > 5), and its degrees of freedom."""
    probs = np.asarray(jax.nn.softmax(-ising.energy(params, configs)), np.float64)
    levels, index = np.unique(_level_statistic(ising, configs), return_inverse=True)
    expected = len(positions) * np.bincount(index, weights=probs)
    observed_labels = _level_statistic(ising, positions)
    observed = np.array([(observed_labels == level).sum() for level in levels])
    keep = expected > 5
    return float(((observed - expected)[keep] ** 2 / expected[keep]).sum()), int(keep.sum() - 1)


@pytest.mark.parametrize("field", [0.0, 0.2])
def test_one_step_invariance_on_the_3x3_torus(field):
    """Chains started at exact draws of the 3x3 periodic model stay exact after one step of
    ``ising.kernel(params)`` (greedy colouring): chi-square test of the (bond sum, |M|) levels.
    The same test rejects the improper checkerboard (two neighbours redrawn together)."""
    ising = Ising((3, 3))
    assert not ising.is_bipartite and int(ising.colouring.max()) >= 2
    params = ising.init_params(beta=0.6, field=field)
    configs = _configs((3, 3))
    num = 200_000
    draws = configs[jax.random.categorical(jax.random.key(0), -ising.energy(params, configs),
                                           shape=(num,))]
    algorithm = ising.kernel(params)
    state, _ = jax.jit(algorithm.step)(jax.random.key(1), algorithm.init(draws))
    threshold = scipy.stats.chi2.ppf(1 - 1e-4, 20)
    chi2, dof = _chi2(ising, params, state.position, configs)
    assert dof >= 10 and chi2 < scipy.stats.chi2.ppf(1 - 1e-4, dof), (chi2, dof)

    parity = np.indices((3, 3)).sum(0) % 2 == 0

    def improper_checkerboard(key, s):
        for k, mask in zip(jax.random.split(key), (parity, ~parity)):
            p_up = jax.nn.sigmoid(2.0 * ising.local_field(params, s))
            s = jnp.where(mask, jnp.where(jax.random.uniform(k, s.shape) < p_up, 1.0, -1.0), s)
        return s

    bad = jax.jit(improper_checkerboard)(jax.random.key(1), draws)
    assert _chi2(ising, params, bad, configs)[0] > 2 * threshold


def test_many_steps_on_the_3x3_torus_match_enumeration():
    """Moments after 50 steps from uniform spins: mean energy and mean |M| within 4 standard
    errors of the exact values (through ``ising.sample``). (At beta = 0.45 the chains cross
    between the two ordered states within a few steps.)"""
    ising = Ising((3, 3))
    params = ising.init_params(beta=0.45, field=0.1)
    configs = _configs((3, 3))
    probs = jax.nn.softmax(-ising.energy(params, configs))
    result = ising.sample(jax.random.key(2), params, num_chains=4000, num_steps=50)
    for stat in (lambda s: ising.energy(params, s), lambda s: jnp.abs(ising.magnetization(s))):
        values = stat(result.positions)
        exact = float(probs @ stat(configs))
        assert abs(float(values.mean()) - exact) < 4 * float(values.std()) / np.sqrt(4000)


def test_sample_chains_with_the_distribution_and_no_kernel():
    """kernel=None: sample_chains runs the distribution's own sampler (the path at beta = 1)."""
    ising = Ising((4, 4))
    params = ising.init_params(beta=0.3, field=0.1)
    result = numpyro_ebm.sample_chains(jax.random.key(0), ising.distribution(params), None,
                                       ising.init_spins(jax.random.key(1), 8), num_steps=4)
    np.testing.assert_allclose(result.logdensity, ising.logdensity(params, result.positions),
                               atol=1e-4)
    assert 0 < float(result.acceptance_rate.mean()) < 1
