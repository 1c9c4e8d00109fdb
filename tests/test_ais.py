"""Annealed importance sampling: generic logz_ais (continuous and discrete) and the RBM's AIS."""

import math
from functools import partial

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

import numpyro_ebm
from numpyro_ebm.evaluation.ais import (
    AISResult,
    annealed_importance_sampling,
    logz_ais,
    temperature_schedule,
)
from numpyro_ebm.models.rbm import RBM
from numpyro_ebm.sampling.gibbs import gibbs


def check_within(result: AISResult, exact, k=4.0, floor=0.0):
    err = abs(float(result.log_Z) - float(exact))
    assert np.isfinite(float(result.stderr)) and float(result.stderr) > 0
    assert err < k * float(result.stderr) + floor, (float(result.log_Z), float(exact),
                                                     float(result.stderr))


def test_gaussian_1d_mala():
    """E(x) = (x - 1)^2 / (2 * 0.3^2): log Z = log(sqrt(2 pi) 0.3)."""
    s = 0.3
    energy = lambda x: jnp.sum((x - 1.0) ** 2) / (2 * s**2)
    base = dist.Normal(0.0, 2.0).expand([1]).to_event(1)
    res = logz_ais(jax.random.key(0), energy, base, partial(blackjax.mala, step_size=0.02),
                   num_chains=512, num_temperatures=200, num_steps=2)
    assert res.log_weights.shape == (512,)
    assert res.positions.shape == (512, 1)
    check_within(res, math.log(math.sqrt(2 * math.pi) * s))
    assert float(res.stderr) < 0.05
    # final positions are (approximately) from the target
    assert abs(float(res.positions.mean()) - 1.0) < 0.1


def test_gaussian_2d_hmc_correlated():
    cov = jnp.array([[1.0, 0.8], [0.8, 1.0]])
    prec = jnp.linalg.inv(cov)
    energy = lambda x: 0.5 * x @ prec @ x
    exact = 0.5 * jnp.linalg.slogdet(2 * math.pi * cov)[1]
    base = dist.Normal(0.0, 2.0).expand([2]).to_event(1)
    kernel = partial(blackjax.hmc, step_size=0.2, inverse_mass_matrix=jnp.ones(2),
                     num_integration_steps=5)
    res = logz_ais(jax.random.key(1), energy, base, kernel, num_chains=256, num_temperatures=100)
    check_within(res, exact)
    assert float(res.ess) > 50


def test_discrete_generic_gibbs_matches_exact_rbm():
    """The generic estimator on binary variables: single-site Gibbs on an RBM's free energy."""
    rbm = RBM(8, 5)
    k1, k2 = jax.random.split(jax.random.key(2))
    params = {"W": jax.random.normal(k1, (8, 5)), "a": 0.3 * jax.random.normal(k2, (8,)),
              "b": jnp.zeros(5)}
    base = dist.Bernoulli(probs=0.5 * jnp.ones(8)).to_event(1)
    res = logz_ais(jax.random.key(3), lambda v: rbm.free_energy(params, v), base,
                   partial(gibbs, values=(0, 1)), num_chains=256, num_temperatures=100)
    check_within(res, rbm.log_partition(params))


# 22 s; test_model_protocol.test_ais_rbm_own_path_matches_enumeration checks RBM AIS against
# enumeration
@pytest.mark.slow
def test_rbm_ais_v20_h16_within_error_bars():
    """Salakhutdinov & Murray AIS on an RBM with 16 hidden units vs exact enumeration."""
    rbm = RBM(20, 16)
    k1, k2, k3 = jax.random.split(jax.random.key(4), 3)
    params = {"W": 0.7 * jax.random.normal(k1, (20, 16)), "a": 0.3 * jax.random.normal(k2, (20,)),
              "b": 0.3 * jax.random.normal(k3, (16,))}
    exact = rbm.log_partition(params)
    res = rbm.logz_ais(jax.random.key(5), params, num_temperatures=1000, num_chains=200,
                       schedule="linear")
    check_within(res, exact)
    assert float(res.stderr) < 0.1
    # a base from "data" (here: samples of the model) gives a valid estimate too
    data = rbm.sample(jax.random.key(6), params, 500, 50).positions
    res_data = rbm.logz_ais(jax.random.key(7), params, num_temperatures=1000, num_chains=200,
                            schedule="linear", data=data)
    check_within(res_data, exact)


def test_ais_engine_exact_with_perfect_transitions():
    """With exact draws at every temperature the engine is unbiased for any schedule: a tiny
    discrete target, transitions that redraw from f_beta exactly."""
    vals = jnp.arange(5.0)
    target = jnp.array([0.3, -1.0, 2.0, 0.5, 0.0])  # log unnormalized weights

    def log_density(beta, x):
        return beta * target[x.astype(jnp.int32)]

    def transition(key, beta, x):
        return jax.random.categorical(key, beta * target).astype(x.dtype)

    def sample_base(key, n):
        return jax.random.randint(key, (n,), 0, 5).astype(jnp.float32)

    path = numpyro_ebm.transition_path(log_density, transition, sample_base, math.log(5.0))
    res = annealed_importance_sampling(jax.random.key(9), path, temperature_schedule(10, "linear"),
                                       2000)
    check_within(res, jax.scipy.special.logsumexp(target))
    del vals


def test_temperature_schedules_and_errors():
    for name in ("linear", "sigmoid", "geometric"):
        b = np.asarray(temperature_schedule(50, name))
        assert b.shape == (51,) and b[0] == 0 and abs(b[-1] - 1) < 1e-6 and np.all(np.diff(b) >= 0)
    with pytest.raises(ValueError, match="schedule"):
        temperature_schedule(10, "cubic")
    base = dist.Normal(0.0, 1.0).expand([2]).to_event(1)
    kern = partial(blackjax.mala, step_size=0.1)
    energy = lambda x: jnp.sum(x**2)
    with pytest.raises(ValueError, match="betas"):
        logz_ais(jax.random.key(0), energy, base, kern, betas=jnp.array([0.2, 1.0]))
    with pytest.raises(TypeError, match="base"):
        logz_ais(jax.random.key(0), energy, lambda x: x, kern)
    with pytest.raises(ValueError, match="scalar"):
        logz_ais(jax.random.key(0), lambda x: x**2, base, kern, num_temperatures=5)
    with pytest.raises(TypeError, match="factory"):
        logz_ais(jax.random.key(0), energy, base, kern(lambda x: -energy(x)))


def test_logz_ais_refuses_a_built_algorithm_as_kernel():
    """A `SamplingAlgorithm` bound to one density would not sample f_beta: refused by name."""
    base = dist.Normal(0.0, 1.0).expand([2]).to_event(1)
    energy = lambda x: 0.25 * jnp.sum(x**4)
    with pytest.raises(TypeError, match="`kernel` must be a factory.*already bound"):
        logz_ais(jax.random.key(0), energy, base, blackjax.mala(lambda x: -energy(x), 0.1))
    # a path brings its own kernels: another kernel is refused too
    mala = partial(blackjax.mala, step_size=0.1)
    path = numpyro_ebm.geometric_path(lambda x: -energy(x), base, mala)
    with pytest.raises(ValueError, match="`kernel`"):
        logz_ais(jax.random.key(0), path, kernel=partial(blackjax.mala, step_size=0.1))


def test_logz_ais_refuses_a_factory_that_ignores_its_density():
    """`lambda f: mala(fixed density)` anneals nothing; it is caught before anything runs. A
    factory that shifts the density by a constant samples the same thing and is accepted."""
    base = dist.Normal(0.0, 2.0).expand([2]).to_event(1)
    energy = lambda x: 0.25 * jnp.sum(x**4)  # not the Gaussian the bad kernel samples
    ignores = lambda f: blackjax.mala(lambda x: -0.5 * jnp.sum(x**2), 0.1)
    with pytest.raises(ValueError, match="`kernel` does not sample the density of the `target`"):
        logz_ais(jax.random.key(0), energy, base, ignores, num_chains=8, num_temperatures=5)
    # an AnnealingPath whose kernels ignore beta is caught the same way
    mala = partial(blackjax.mala, step_size=0.1)
    good = numpyro_ebm.geometric_path(lambda x: -energy(x), base, mala)
    frozen = good._replace(kernel=lambda beta: good.kernel(1.0))
    with pytest.raises(ValueError, match="kernel"):
        logz_ais(jax.random.key(0), frozen, num_chains=8, num_temperatures=5)
    shifted = lambda f: blackjax.mala(lambda x: f(x) + 3.0, 0.1)
    res = logz_ais(jax.random.key(0), energy, base, shifted, num_chains=8, num_temperatures=5)
    assert np.isfinite(float(res.log_Z))


def test_logz_ais_ess_is_the_normalized_weights_ess():
    base = dist.Normal(0.0, 2.0).expand([1]).to_event(1)
    res = logz_ais(jax.random.key(0), lambda x: jnp.sum(x**2), base,
                   partial(blackjax.mala, step_size=0.1), num_chains=64, num_temperatures=5)
    w = np.exp(np.asarray(res.log_weights, np.float64) - np.max(res.log_weights))
    np.testing.assert_allclose(float(res.ess), w.sum() ** 2 / (w**2).sum(), rtol=1e-4)
    assert 1.0 <= float(res.ess) < 64.0  # five temperatures: unequal weights


def test_repeated_logz_ais_calls_reuse_the_compiled_program():
    """The factory is called while the program is traced; a second call with the same target,
    base and kernel traces nothing (fewer factory calls), a new kernel object traces again."""
    calls = []

    def kernel(logdensity_fn):
        calls.append(1)
        return blackjax.mala(logdensity_fn, 0.1)

    base = dist.Normal(0.0, 2.0).expand([2]).to_event(1)
    energy = lambda x: 0.5 * jnp.sum(x**2)

    def run(key, kern):
        before = len(calls)
        res = logz_ais(jax.random.key(key), energy, base, kern, num_chains=16, num_temperatures=8)
        return res, len(calls) - before

    first, n_first = run(0, kernel)
    second, n_second = run(1, kernel)
    assert n_second < n_first
    assert float(first.log_Z) != float(second.log_Z)  # a new key is a new run
    _, n_other = run(1, lambda f: kernel(f))
    assert n_other == n_first


def test_first_call_lowers_few_programs():
    """The once-per-target checks of ``logz_ais`` (the energy's shape, the kernel's density) run
    as one small compiled program, not as dozens of eager operations each compiled on its own:
    those took 3-4 s of a 6-s first call (benchmarks/latency.py, ``ais``). Lowered from empty
    caches in this call: 60 programs before the change, 5 after (the run, the check, keys)."""
    import jax.monitoring

    lowered = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
            lowered.append(duration)

    def energy(x):  # a new function: no earlier call's checks or program apply
        return 0.5 * jnp.sum(x**2, -1) / 0.7**2

    base = dist.Normal(jnp.zeros(2), 2.0).to_event(1)
    betas = numpyro_ebm.temperature_schedule(50, "sigmoid")
    kernel = partial(blackjax.mala, step_size=0.1)
    key = jax.random.key(0)
    jax.clear_caches()
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        res = numpyro_ebm.logz_ais(key, energy, base, kernel, num_chains=64, betas=betas)
        jax.block_until_ready(res.log_Z)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert len(lowered) <= 20, len(lowered)
    check_within(res, math.log(2 * math.pi * 0.7**2))
