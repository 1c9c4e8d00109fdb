"""Tests of ``numpyro_ebm.sample_chains`` and ``numpyro_ebm.ula``.

Statistical checks use many independent chains and their final positions (independent draws), or
thinned samples whose autocorrelation is negligible, with tolerances of 4 Monte Carlo standard
errors; each has a companion check that the wrong answer is excluded, so the test can fail.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from blackjax.base import SamplingAlgorithm
from blackjax.mcmc.random_walk import RWState
from jax.scipy.special import logsumexp
from scipy.stats import norm

import numpyro_ebm
from numpyro_ebm import Unnormalized, sample_chains, ula

# ------------------------------------------------------------------------------------ targets
MU = jnp.array([1.0, -1.0])
COV = jnp.array([[1.0, 0.6], [0.6, 1.0]])
PREC = jnp.linalg.inv(COV)


def gauss_logdensity(x):
    d = x - MU
    return -0.5 * d @ PREC @ d


def mixture_logdensity(weights, means, scale):
    """1-D mixture ``sum_k w_k N(means_k, scale^2)`` for a position of shape ``(1,)``."""
    logw = jnp.log(jnp.asarray(weights))
    means = jnp.asarray(means)

    def logdensity(x):
        return logsumexp(logw - 0.5 * ((x[0] - means) / scale) ** 2)

    return logdensity


def mixture_draws(key, n, weights, means, scale):
    k1, k2 = jax.random.split(key)
    comp = jax.random.choice(k1, len(weights), (n,), p=jnp.asarray(weights))
    return (jnp.asarray(means)[comp] + scale * jax.random.normal(k2, (n,)))[:, None]


def assert_gaussian_moments(x, mean, cov, n_se=4.0):
    """Mean and covariance of independent draws ``x`` (n, d) within ``n_se`` standard errors.

    SE(mean_i) = sqrt(S_ii / n); SE(cov_ij) = sqrt((S_ii S_jj + S_ij^2) / n) for Gaussian draws.
    """
    x = np.asarray(x, np.float64)
    mean, cov = np.asarray(mean, np.float64), np.asarray(cov, np.float64)
    n = x.shape[0]
    se_mean = np.sqrt(np.diag(cov) / n)
    np.testing.assert_array_less(np.abs(x.mean(0) - mean), n_se * se_mean)
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    np.testing.assert_array_less(np.abs(np.cov(x.T) - cov), n_se * se_cov)


# Every kernel as a factory `logdensity_fn -> SamplingAlgorithm`, with enough steps to forget the
# (broad) initial distribution on the correlated Gaussian above.
KERNELS = {
    "rmh": (functools.partial(blackjax.normal_random_walk, sigma=jnp.full(2, 0.9)), 600),
    "ula": (functools.partial(ula, step_size=0.01), 1500),
    "mala": (functools.partial(blackjax.mala, step_size=0.2), 400),
    "hmc": (
        functools.partial(
            blackjax.hmc, step_size=0.3, inverse_mass_matrix=jnp.ones(2), num_integration_steps=8
        ),
        60,
    ),
    "nuts": (functools.partial(blackjax.nuts, step_size=0.4, inverse_mass_matrix=jnp.ones(2)), 40),
}
NUM_CHAINS = 2000


@pytest.fixture(scope="module")
def broad_init():
    return 2.0 * jax.random.normal(jax.random.key(1), (NUM_CHAINS, 2))


@pytest.mark.parametrize("name", list(KERNELS))
def test_correlated_gaussian_moments(name, broad_init):
    kernel, num_steps = KERNELS[name]
    result = sample_chains(jax.random.key(2), gauss_logdensity, kernel, broad_init, num_steps)
    assert_gaussian_moments(result.positions, MU, COV)
    # The check can fail: the initial distribution (mean 0, cov 4I) is far outside the tolerance.
    with pytest.raises(AssertionError):
        assert_gaussian_moments(broad_init, MU, COV)
    rate = np.asarray(result.acceptance_rate)
    assert rate.shape == (NUM_CHAINS,)
    assert 0.2 < rate.mean() <= 1.0
    if name == "ula":
        np.testing.assert_array_equal(rate, 1.0)
    np.testing.assert_allclose(
        result.logdensity, jax.vmap(gauss_logdensity)(result.positions), rtol=1e-4, atol=1e-4
    )


def _mode_weight_check(positions, p_right, n_se=4.0):
    right = np.asarray(positions[:, 0] > 0, np.float64)
    se = np.sqrt(p_right * (1 - p_right) / right.size)
    assert abs(right.mean() - p_right) < n_se * se, (right.mean(), p_right, se)


@pytest.mark.parametrize(
    "name",
    ["ula"] + [pytest.param(k, marks=pytest.mark.slow) for k in ("rmh", "mala", "hmc", "nuts")],
)
def test_separated_mixture_weights_preserved(name):
    """Modes 8 standard deviations apart cannot be crossed: chains started from the exact mixture
    must stay distributed as the mixture (weights and within-mode spread preserved)."""
    weights, means, scale = (0.3, 0.7), (-4.0, 4.0), 0.5
    kernel, _ = KERNELS[name]
    if name == "rmh":
        kernel = functools.partial(blackjax.normal_random_walk, sigma=jnp.full(1, 0.6))
    if name in ("hmc", "nuts"):
        kernel = functools.partial(kernel, inverse_mass_matrix=jnp.ones(1))
    if name == "ula":
        kernel = functools.partial(ula, step_size=0.002)
    x0 = mixture_draws(jax.random.key(3), 4000, weights, means, scale)
    result = sample_chains(
        jax.random.key(4), mixture_logdensity(weights, means, scale), kernel, x0, 100
    )
    x = np.asarray(result.positions[:, 0])
    _mode_weight_check(result.positions, 0.7)
    # Within-mode spread is the component's: a kernel that collapses or inflates chains fails.
    for sign in (-1, 1):
        xm = x[np.sign(x) == sign]
        se_var = scale**2 * np.sqrt(2.0 / xm.size)
        assert abs(xm.var() - scale**2) < 4 * se_var
        assert abs(xm.mean() - sign * 4.0) < 4 * scale / np.sqrt(xm.size)


MIX_W, MIX_MEANS, MIX_SCALE = (0.3, 0.7), (-1.5, 1.5), 0.6
# P(x > 0) under the mixture: the right-mode weight seen through the sign of x.
MIX_P_RIGHT = float(MIX_W[0] * norm.sf(1.5 / MIX_SCALE) + MIX_W[1] * norm.cdf(1.5 / MIX_SCALE))
MIX_KERNELS = {
    "rmh": (functools.partial(blackjax.normal_random_walk, sigma=jnp.full(1, 1.5)), 1000),
    "ula": (functools.partial(ula, step_size=0.02), 4000),
    "mala": (functools.partial(blackjax.mala, step_size=0.15), 3000),
    "hmc": (
        functools.partial(
            blackjax.hmc, step_size=0.3, inverse_mass_matrix=jnp.ones(1), num_integration_steps=8
        ),
        400,
    ),
    "nuts": (functools.partial(blackjax.nuts, step_size=0.4, inverse_mass_matrix=jnp.ones(1)), 400),
}


def _check_mixing_mixture(name):
    kernel, num_steps = MIX_KERNELS[name]
    # Every chain starts in the LEFT (light) mode: the right weight 0.7 is only reached by hopping.
    x0 = -1.5 + 0.1 * jax.random.normal(jax.random.key(5), (2000, 1))
    result = sample_chains(
        jax.random.key(6), mixture_logdensity(MIX_W, MIX_MEANS, MIX_SCALE), kernel, x0, num_steps
    )
    _mode_weight_check(result.positions, MIX_P_RIGHT)


@pytest.mark.parametrize("name", ["hmc"])
def test_moderate_mixture_chains_hop_to_correct_weights(name):
    _check_mixing_mixture(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["rmh", "ula", "mala", "nuts"])
def test_moderate_mixture_chains_hop_to_correct_weights_slow(name):
    _check_mixing_mixture(name)


# ----------------------------------------------------------------------------- ULA's bias
def _stationary_var(step_size, s2, noise_scale=None, chains=2000, keep=50, thin=10):
    """Variance of thinned ULA draws on N(0, s2) (autocorrelation (1 - h/s2)^thin ~ 0)."""
    kernel = functools.partial(ula, step_size=step_size, noise_scale=noise_scale)
    result = sample_chains(
        jax.random.key(7),
        lambda x: -0.5 * x[0] ** 2 / s2,
        kernel,
        jnp.zeros((chains, 1)),
        num_steps=100 + keep * thin,
        num_samples=keep,
        thin=thin,
    )
    x = np.asarray(result.samples, np.float64).ravel()
    return x.mean(), x.var(), x.size


@pytest.mark.parametrize("s2", [1.0, 4.0])
def test_ula_stationary_variance_is_the_biased_closed_form(s2):
    h = 0.5 * s2  # contraction 1 - h/s2 = 1/2 per step
    mean, var, n = _stationary_var(h, s2)
    expected = s2 / (1.0 - h / (2.0 * s2))  # = 2h / (1 - (1 - h/s2)^2) = 4/3 s2
    np.testing.assert_allclose(expected, 2 * h / (1 - (1 - h / s2) ** 2))
    se = expected * np.sqrt(2.0 / n)
    assert abs(var - expected) < 4 * se
    assert abs(var - s2) > 10 * se  # the unbiased value s2 is excluded: the bias is real
    assert abs(mean) < 4 * np.sqrt(expected / n)


def test_ula_decoupled_noise_scale_variance():
    s2, h, sigma = 1.0, 0.5, 0.3
    mean, var, n = _stationary_var(h, s2, noise_scale=sigma)
    expected = sigma**2 / (1.0 - (1.0 - h / s2) ** 2)  # 0.12
    se = expected * np.sqrt(2.0 / n)
    assert abs(var - expected) < 4 * se
    assert abs(var - s2 / (1 - h / (2 * s2))) > 10 * se  # not the sqrt(2h) value


def test_ula_matches_unadjusted_mala_proposal():
    """One ULA step is exactly x + h grad log p + sqrt(2h) eps with eps from the step's key."""
    algo = ula(gauss_logdensity, step_size=0.1)
    state = algo.init(jnp.array([0.3, -0.2]))
    key = jax.random.key(0)
    new, info = algo.step(key, state)
    eps = blackjax.util.generate_gaussian_noise(key, state.position)
    expected = state.position + 0.1 * jax.grad(gauss_logdensity)(state.position)
    expected = expected + jnp.sqrt(0.2) * eps
    np.testing.assert_allclose(new.position, expected, rtol=1e-6)
    np.testing.assert_allclose(new.logdensity, gauss_logdensity(new.position), rtol=1e-6)
    np.testing.assert_allclose(new.logdensity_grad, jax.grad(gauss_logdensity)(new.position))
    assert info.acceptance_rate == 1.0 and bool(info.is_accepted)
    assert isinstance(ula, blackjax.GenerateSamplingAPI)
    assert ula.init is numpyro_ebm.sampling.langevin.init
    assert callable(ula.build_kernel())
    # the move is BlackJAX's overdamped Langevin Euler step, bit for bit
    diffusion = blackjax.mcmc.diffusions.overdamped_langevin(jax.value_and_grad(gauss_logdensity))
    reference = diffusion(key, blackjax.mcmc.diffusions.DiffusionState(*state), 0.1)
    for a, b in zip(new, reference):
        np.testing.assert_array_equal(a, b)
    # noise_scale decouples the noise: x + h grad log p + sigma eps (to rounding)
    decoupled, _ = ula(gauss_logdensity, step_size=0.1, noise_scale=0.03).step(key, state)
    expected = state.position + 0.1 * jax.grad(gauss_logdensity)(state.position) + 0.03 * eps
    np.testing.assert_allclose(decoupled.position, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        decoupled.logdensity, gauss_logdensity(decoupled.position), rtol=1e-6
    )


# --------------------------------------------------------------------------- result fields
def counter_algorithm(logdensity_fn):
    """A deterministic kernel ``x <- x + 1`` whose info has no ``acceptance_rate``."""

    def init(position, rng_key=None):
        return RWState(position, logdensity_fn(position))

    def step(rng_key, state):
        position = jax.tree.map(lambda x: x + 1.0, state.position)
        return RWState(position, logdensity_fn(position)), {"note": 0.0}

    return SamplingAlgorithm(init, step)


def test_result_shapes_and_fields():
    x0 = jax.random.normal(jax.random.key(0), (16, 2))
    kernel = functools.partial(blackjax.mala, step_size=0.1)
    r = sample_chains(jax.random.key(1), gauss_logdensity, kernel, x0, 20, num_samples=4, thin=3)
    assert isinstance(r, numpyro_ebm.ChainResult)
    assert r.positions.shape == (16, 2)
    assert r.samples.shape == (4, 16, 2)
    assert r.acceptance_rate.shape == (16,)
    assert r.logdensity.shape == (16,)
    assert r.state.position.shape == (16, 2)
    np.testing.assert_array_equal(r.samples[-1], r.positions)
    assert np.all((np.asarray(r.acceptance_rate) >= 0) & (np.asarray(r.acceptance_rate) <= 1))
    r0 = sample_chains(jax.random.key(1), gauss_logdensity, kernel, x0, 20)
    assert r0.samples is None
    np.testing.assert_array_equal(r0.positions, r.positions)  # keeping samples changes nothing


def test_thin_and_num_samples_keep_the_last_states():
    x0 = jnp.zeros((3, 2))
    r = sample_chains(jax.random.key(0), gauss_logdensity, counter_algorithm, x0, 10, 3, thin=2)
    # States after steps 6, 8 and 10 (the last 3 after thinning by 2).
    np.testing.assert_array_equal(r.samples[:, 0, 0], [6.0, 8.0, 10.0])
    np.testing.assert_array_equal(r.positions, 10.0)
    r = sample_chains(jax.random.key(0), gauss_logdensity, counter_algorithm, x0, 9, 4, thin=2)
    np.testing.assert_array_equal(r.samples[:, 1, 1], [3.0, 5.0, 7.0, 9.0])
    r = sample_chains(jax.random.key(0), gauss_logdensity, counter_algorithm, x0, 5, 5)
    np.testing.assert_array_equal(r.samples[:, 2, 0], [1.0, 2.0, 3.0, 4.0, 5.0])


def test_kept_samples_follow_the_key_schedule_across_a_partial_block():
    """Burn-in and kept samples run in one loop; for a few chains the keys of a block of steps
    are hashed ahead and the last block is partial (4 chains: blocks of 2048 steps). Every kept
    state equals a plain loop with the documented keys, step t of chain c drawing with
    fold_in(fold_in(fold_in(rng_key, 2), t), c)."""
    num_chains, num_steps, num_samples, thin = 4, 2100, 5, 7
    x0 = jax.random.normal(jax.random.key(0), (num_chains, 2))
    algorithm = blackjax.mala(gauss_logdensity, 0.5)
    key = jax.random.key(1)
    r = sample_chains(key, gauss_logdensity, functools.partial(blackjax.mala, step_size=0.5), x0,
                      num_steps, num_samples=num_samples, thin=thin)

    @jax.jit
    def reference():
        root = jax.random.fold_in(key, 2)
        chains = jnp.arange(num_chains, dtype=jnp.uint32)

        def step(t, state):
            step_key = jax.random.fold_in(root, t)
            keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(step_key, chains)
            return jax.vmap(algorithm.step)(keys, state)[0]

        kept = []
        state = jax.vmap(algorithm.init)(x0)
        t0 = 0
        for t1 in range(num_steps - (num_samples - 1) * thin, num_steps + 1, thin):
            state = jax.lax.fori_loop(t0, t1, step, state)
            kept.append(state.position)
            t0 = t1
        return jnp.stack(kept)

    np.testing.assert_allclose(r.samples, reference(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(r.samples[-1], r.positions)


def test_acceptance_rate_is_nan_without_info_field():
    r = sample_chains(jax.random.key(0), gauss_logdensity, counter_algorithm, jnp.zeros((4, 2)), 3)
    assert r.acceptance_rate.shape == (4,)
    assert np.all(np.isnan(np.asarray(r.acceptance_rate)))


def test_pytree_positions():
    def logdensity(p):
        return -0.5 * jnp.sum(p["a"] ** 2) - 0.5 * (p["b"] - 2.0) ** 2 / 0.25

    x0 = {"a": jnp.zeros((2000, 3)), "b": jnp.zeros((2000,))}
    for kernel in (
        functools.partial(ula, step_size=0.01),
        functools.partial(blackjax.mala, step_size=0.05),
    ):
        r = sample_chains(jax.random.key(0), logdensity, kernel, x0, 600, num_samples=2, thin=5)
        assert r.positions["a"].shape == (2000, 3) and r.positions["b"].shape == (2000,)
        assert r.samples["a"].shape == (2, 2000, 3) and r.samples["b"].shape == (2, 2000)
        assert r.logdensity.shape == (2000,)
        b = np.asarray(r.positions["b"])
        assert abs(b.mean() - 2.0) < 4 * 0.5 / np.sqrt(b.size)
        assert abs(np.asarray(r.positions["a"]).var() - 1.0) < 4 * np.sqrt(2.0 / (3 * 2000))


def test_init_state_resume():
    x0 = jnp.zeros((5, 2))
    full = sample_chains(jax.random.key(0), gauss_logdensity, counter_algorithm, x0, 10)
    first = sample_chains(jax.random.key(0), gauss_logdensity, counter_algorithm, x0, 4)
    rest = sample_chains(
        jax.random.key(1), gauss_logdensity, counter_algorithm, x0, 6, init_state=first.state
    )
    np.testing.assert_array_equal(rest.positions, full.positions)
    np.testing.assert_array_equal(rest.logdensity, full.logdensity)
    # A stochastic kernel continues from the state it is given (not from init_positions).
    kernel = functools.partial(ula, step_size=0.01)
    a = sample_chains(jax.random.key(0), gauss_logdensity, kernel, x0 + 50.0, 5)
    b = sample_chains(jax.random.key(2), gauss_logdensity, kernel, x0, 1, init_state=a.state)
    c = sample_chains(jax.random.key(2), gauss_logdensity, kernel, a.positions, 1)
    np.testing.assert_allclose(b.positions, c.positions, rtol=1e-6)
    assert np.all(np.asarray(b.positions) > 40.0)


def test_jit_with_traced_init_positions():
    kernel = functools.partial(blackjax.mala, step_size=0.1)

    @jax.jit
    def run(key, x0):
        r = sample_chains(key, gauss_logdensity, kernel, x0, 30, num_samples=5, thin=2)
        return r.positions, r.samples, r.acceptance_rate, r.logdensity

    x0 = jax.random.normal(jax.random.key(0), (8, 2))
    jitted = run(jax.random.key(3), x0)
    eager = sample_chains(jax.random.key(3), gauss_logdensity, kernel, x0, 30, 5, 2)
    for a, b in zip(jitted, eager[:4]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_vmap_over_keys_inside_jit():
    kernel = functools.partial(blackjax.mala, step_size=0.1)

    def run(key, x0):
        return sample_chains(key, gauss_logdensity, kernel, x0, 30, num_samples=5).positions

    x0 = jax.random.normal(jax.random.key(0), (8, 2))
    keys = jax.random.split(jax.random.key(4), 2)
    batch = jax.jit(jax.vmap(run, in_axes=(0, None)))(keys, x0)
    assert batch.shape == (2, 8, 2)
    np.testing.assert_allclose(batch[1], run(keys[1], x0), rtol=1e-5, atol=1e-6)


def test_unnormalized_distribution_as_logdensity():
    dist = Unnormalized(
        lambda x: -jax.vmap(gauss_logdensity)(x.reshape(-1, 2)).reshape(x.shape[:-1]), (2,)
    )
    kernel = functools.partial(ula, step_size=0.05)
    x0 = jnp.zeros((7, 2))
    r1 = sample_chains(jax.random.key(0), dist, kernel, x0, 10, num_samples=2)
    r2 = sample_chains(jax.random.key(0), gauss_logdensity, kernel, x0, 10, num_samples=2)
    np.testing.assert_allclose(r1.positions, r2.positions, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r1.logdensity, r2.logdensity, rtol=1e-5, atol=1e-5)


def test_repeated_calls_do_not_recompile():
    """The log density runs in Python only while a program is traced: a second call with the
    same kernel and density traces nothing but the shape check of `init_positions`."""
    calls = []

    def logdensity(x):
        calls.append(1)
        return gauss_logdensity(x)

    kernel = functools.partial(ula, step_size=0.05)
    x0 = jnp.zeros((6, 2))

    def run(key, x):
        before = len(calls)
        sample_chains(jax.random.key(key), logdensity, kernel, x, 7)
        return len(calls) - before

    first = run(0, x0)
    second = run(1, x0 + 1.0)
    assert second < first and second <= 1
    assert run(2, jnp.zeros((5, 2))) > second  # a new shape compiles a new program


# ---------------------------------------------------------------------------------- sharding
_SHARD_SCRIPT = textwrap.dedent(
    """
    import functools, json, sys
    import jax, jax.numpy as jnp, blackjax
    from numpyro_ebm import sample_chains
    assert len(jax.devices()) == int(sys.argv[1]), jax.devices()
    x0 = jnp.linspace(-1.0, 1.0, 16).reshape(8, 2)
    r = sample_chains(jax.random.key(0), lambda x: -0.5 * jnp.sum(x**2),
                      functools.partial(blackjax.mala, step_size=0.2), x0, 25, num_samples=3)
    print(json.dumps({
        "devices": len(r.positions.sharding.device_set),
        "positions": r.positions.tolist(), "samples": r.samples.tolist(),
        "acc": r.acceptance_rate.tolist()}))
    """
)


def _run_script(num_devices):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
    out = subprocess.run(
        [sys.executable, "-c", _SHARD_SCRIPT, str(num_devices)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


# 21 s; test_multiprocess.test_four_devices_match_one_device compares 4 devices with 1
@pytest.mark.slow
def test_sharding_over_four_devices_matches_one_device():
    four = _run_script(4)
    assert four["devices"] == 4
    one = _run_script(1)
    assert one["devices"] == 1
    for k in ("positions", "samples", "acc"):
        np.testing.assert_allclose(four[k], one[k], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------ errors
def test_error_event_shape_mismatch():
    dist = Unnormalized(lambda x: 0.5 * jnp.sum(x**2, -1), (2,))
    with pytest.raises(ValueError, match="event_shape"):
        sample_chains(
            jax.random.key(0), dist, functools.partial(ula, step_size=0.1), jnp.zeros((4, 3)), 5
        )
    # a plain function that cannot take the position shape is reported as well
    with pytest.raises(ValueError, match="init_positions"):
        sample_chains(
            jax.random.key(0),
            gauss_logdensity,
            functools.partial(ula, step_size=0.1),
            jnp.zeros((4, 3)),
            5,
        )


@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf])
def test_error_non_finite_init_positions(bad):
    x0 = jnp.zeros((4, 2)).at[2, 1].set(bad)
    with pytest.raises(ValueError, match="init_positions.*non-finite"):
        sample_chains(
            jax.random.key(0), gauss_logdensity, functools.partial(ula, step_size=0.1), x0, 5
        )


def test_error_non_finite_initial_logdensity():
    def half_plane(x):
        return jnp.where(x[0] > 0, -0.5 * jnp.sum(x**2), -jnp.inf)

    x0 = jnp.array([[1.0, 0.0], [-1.0, 0.0], [2.0, 0.0]])
    for kernel in (
        functools.partial(ula, step_size=0.1),
        functools.partial(blackjax.normal_random_walk, sigma=jnp.ones(2)),
    ):
        with pytest.raises(ValueError, match="not finite at 1 of 3.*chain 1"):
            sample_chains(jax.random.key(0), half_plane, kernel, x0, 5)


@pytest.mark.parametrize("step_size", [0.0, -0.1])
def test_error_ula_step_size(step_size):
    with pytest.raises(ValueError, match="step_size"):
        ula(gauss_logdensity, step_size=step_size)
    with pytest.raises(ValueError, match="step_size"):
        sample_chains(
            jax.random.key(0),
            gauss_logdensity,
            functools.partial(ula, step_size=step_size),
            jnp.zeros((2, 2)),
            5,
        )
    with pytest.raises(ValueError, match="noise_scale"):
        ula(gauss_logdensity, step_size=0.1, noise_scale=step_size)


@pytest.mark.parametrize(
    "kernel",
    [
        blackjax.mala,  # the factory's class itself, step_size missing
        3,
        lambda logdensity_fn: "not an algorithm",
    ],
    ids=["mala-without-step", "int", "returns-str"],
)
def test_error_kernel_not_a_factory(kernel):
    with pytest.raises(TypeError, match="kernel"):
        sample_chains(jax.random.key(0), gauss_logdensity, kernel, jnp.zeros((2, 2)), 5)


def test_error_step_counts():
    kernel = functools.partial(ula, step_size=0.1)
    x0 = jnp.zeros((2, 2))
    with pytest.raises(ValueError, match="num_samples.*thin.*num_steps"):
        sample_chains(jax.random.key(0), gauss_logdensity, kernel, x0, 10, num_samples=6, thin=2)
    with pytest.raises(ValueError, match="thin"):
        sample_chains(jax.random.key(0), gauss_logdensity, kernel, x0, 10, num_samples=1, thin=0)
    with pytest.raises(TypeError, match="num_steps"):
        sample_chains(jax.random.key(0), gauss_logdensity, kernel, x0, 10.0)
    with pytest.raises(TypeError, match="logdensity_fn"):
        sample_chains(jax.random.key(0), "energy", kernel, x0, 10)


def test_divergence_warning():
    quartic = lambda x: -jnp.sum(x**4)
    x0 = jnp.array([[0.1, 0.1], [30.0, 30.0]])
    kernel = functools.partial(ula, step_size=0.01)
    with pytest.warns(RuntimeWarning, match="1 of 2 chains.*diverged"):
        r = sample_chains(jax.random.key(0), quartic, kernel, x0, 30)
    assert np.isfinite(np.asarray(r.logdensity)).tolist() == [True, False]


def test_sample_chains_with_a_built_algorithm_equals_the_factory():
    """A `SamplingAlgorithm` already bound to the density runs the same chain as the factory."""
    import blackjax

    logdensity = lambda x: -0.5 * jnp.sum(x**2)
    init = jnp.zeros((64, 2))
    key = jax.random.key(3)
    factory = sample_chains(key, logdensity, functools.partial(blackjax.mala, step_size=0.3), init, 50, 10)
    built = sample_chains(key, logdensity, blackjax.mala(logdensity, step_size=0.3), init, 50, 10)
    no_density = sample_chains(key, None, blackjax.mala(logdensity, step_size=0.3), init, 50, 10)
    np.testing.assert_array_equal(factory.samples, built.samples)
    np.testing.assert_array_equal(factory.samples, no_density.samples)
    np.testing.assert_array_equal(factory.logdensity, no_density.logdensity)


def test_sample_chains_kernel_none_uses_the_distributions_own_sampler():
    import blackjax
    import numpyro.distributions as dist

    from numpyro_ebm import geometric_path

    energy = lambda x: 0.5 * jnp.sum(x**2, -1)
    path = geometric_path(lambda x: -energy(x), dist.Normal(0.0, 2.0).expand([2]).to_event(1),
                          functools.partial(blackjax.mala, step_size=0.3))
    ebm = Unnormalized(energy, (2,), annealing_path=path)
    result = sample_chains(jax.random.key(0), ebm, None, jnp.zeros((2000, 2)), 200)
    x = result.positions
    se = 1.0 / np.sqrt(2000)
    assert abs(float(x.mean())) < 5 * se
    assert abs(float(x.var()) - 1.0) < 5 * np.sqrt(2.0 / 4000)
    with pytest.raises(TypeError, match="no sampler of its own"):
        sample_chains(jax.random.key(0), Unnormalized(energy, (2,)), None, jnp.zeros((4, 2)), 2)
    with pytest.raises(TypeError, match="already bound"):
        numpyro_ebm.sampling.chains.build_algorithm(blackjax.mala(energy, 0.1), energy)


def _gauss_mala(logdensity_fn):
    import blackjax

    return blackjax.mala(logdensity_fn, 0.5)


def _gauss(x):
    return -0.5 * jnp.sum(x**2, -1)


def test_streamed_observables_equal_the_moments_of_the_kept_samples():
    from numpyro_ebm.sampling import pool_moments

    f = lambda x: {"x": x, "sq": jnp.sum(x**2)}  # noqa: E731
    result = sample_chains(jax.random.key(0), _gauss, _gauss_mala, jnp.zeros((16, 2)), 60,
                           num_samples=25, thin=2, observables=f)
    kept = result.samples  # (25, 16, 2)
    moments = result.observables
    assert float(moments.count) == 25
    np.testing.assert_allclose(moments.mean["x"], kept.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(moments.variance["sq"], jnp.sum(kept**2, -1).var(0, ddof=1),
                               rtol=1e-4)
    pooled = pool_moments(moments)
    flat = kept.reshape(-1, 2)
    np.testing.assert_allclose(pooled.mean["x"], flat.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooled.variance["x"], flat.var(0, ddof=1), rtol=1e-4)
    assert float(pooled.count) == 25 * 16


def test_keep_samples_false_holds_only_the_statistics():
    result = sample_chains(jax.random.key(0), _gauss, _gauss_mala, jnp.zeros((8, 2)), 20,
                           num_samples=10, observables=lambda x: x, keep_samples=False)
    assert result.samples is None
    assert result.observables.mean.shape == (8, 2)


def test_chain_batches_give_the_unbatched_run():
    init = jax.random.normal(jax.random.key(3), (10, 2))
    kw = dict(num_samples=5, observables=lambda x: x)
    whole = sample_chains(jax.random.key(1), _gauss, _gauss_mala, init, 12, **kw)
    batched = sample_chains(jax.random.key(1), _gauss, _gauss_mala, init, 12, chain_batch_size=4,
                            **kw)
    np.testing.assert_array_equal(whole.positions, batched.positions)
    np.testing.assert_array_equal(whole.samples, batched.samples)
    np.testing.assert_array_equal(whole.acceptance_rate, batched.acceptance_rate)
    np.testing.assert_array_equal(whole.observables.mean, batched.observables.mean)
    resumed = sample_chains(jax.random.key(2), _gauss, _gauss_mala, None, 3, init_state=whole,
                            chain_batch_size=3)
    np.testing.assert_array_equal(
        resumed.positions,
        sample_chains(jax.random.key(2), _gauss, _gauss_mala, None, 3, init_state=whole).positions)


def test_kernel_none_reuses_the_compiled_program():
    """kernel=None (the distribution's own sampler): a second call with the same distribution
    and shapes compiles nothing (the program is keyed by the path's kernel, not by the freshly
    built algorithm)."""
    from numpyro_ebm.models import Ising

    ising = Ising((4, 4))
    target = ising.distribution(ising.init_params(beta=0.3))
    x0 = ising.init_spins(jax.random.key(0), 8)
    compiles = []

    def listener(name, secs, **kwargs):
        if name == "/jax/core/compile/backend_compile_duration":
            compiles.append(secs)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        numpyro_ebm.sample_chains(jax.random.key(1), target, None, x0, 7)
        first = len(compiles)
        numpyro_ebm.sample_chains(jax.random.key(2), target, None, x0, 7)
        assert first > 0 and len(compiles) == first, compiles
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


# ------------------------------------------------------------ per-step work and chain keys
def _hlo_computations(hlo_text):
    """The computations of a compiled HLO module's text, name -> body."""
    import re

    return {
        m.group(1): m.group(2)
        for m in re.finditer(r"^(?:ENTRY )?%?([\w.\-]+) [^\n]*\{\n(.*?)^\}", hlo_text, re.S | re.M)
    }


def _loop_dots(hlo_text):
    """Number of ``dot`` instructions reachable from the ``while`` bodies of a compiled HLO
    module (fused computations included): the matrix products done at every step."""
    import re

    blocks = _hlo_computations(hlo_text)

    def count(name, seen):
        if name in seen or name not in blocks:
            return 0
        seen.add(name)
        body = blocks[name]
        called = re.findall(
            r"(?:calls|to_apply|body|condition|branch_computations)=\{?%?([\w.\-]+)", body)
        return body.count(" dot(") + sum(count(c, seen) for c in called)

    bodies = set(re.findall(r"body=%?([\w.\-]+)", hlo_text))
    assert bodies, "no while loop in the compiled program"
    return sum(count(b, set()) for b in bodies)


def _tanh_logdensity():
    """A small network's log density on R^3 (one tanh layer of 16 over a Gaussian): its
    gradient costs matrix products that the compiled program's text shows."""
    w1 = jax.random.normal(jax.random.key(0), (3, 16))
    w2 = jax.random.normal(jax.random.key(1), (16,))

    def logp(x):
        return -(jnp.tanh(x @ w1) @ w2) / 4.0 - 0.5 * jnp.sum(x**2)

    return logp


def test_ula_evaluates_the_log_density_once_after_the_loop():
    """ULA's move reads only the gradient, so `sample_chains` evaluates the state's log density
    once after the last step (`logdensity_output_only`): the compiled loop has one matrix
    product fewer per step (the value's last layer, which the gradient does not need), and the
    results are those of a ULA that evaluates it every step."""
    from numpyro_ebm.sampling import chains, langevin

    logp = _tanh_logdensity()
    def algorithm(output_only):
        return lambda f: chains.bind_algorithm(
            langevin.init, langevin.build_kernel(), f, logdensity_output_only=output_only,
            step_size=0.05, noise_scale=None)

    init = jax.random.normal(jax.random.key(2), (32, 3))

    def loop_dots(output_only):
        algo = algorithm(output_only)(logp)
        states = jax.vmap(algo.init)(init)
        lowered = chains._run.lower(
            jax.random.key(0), states, 0, algorithm_step=chains._StepKey(algo.step, None, None),
            num_burn=20, num_samples=0, thin=1, sharding=None, observables=None,
            keep_samples=True)
        return _loop_dots(lowered.compile().as_text())

    assert loop_dots(True) < loop_dots(False)
    assert ula(logp, step_size=0.05).step.logdensity_output_only is logp
    # 20 steps, 4 of them kept: a burn-in loop and a kept-samples loop
    ours = sample_chains(jax.random.key(3), logp, algorithm(True), init, 20, 4)
    every_step = sample_chains(jax.random.key(3), logp, algorithm(False), init, 20, 4)
    library = sample_chains(jax.random.key(3), logp, functools.partial(ula, step_size=0.05),
                            init, 20, 4)
    np.testing.assert_allclose(ours.positions, every_step.positions, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ours.positions, library.positions)
    expected = jax.vmap(logp)(ours.positions)
    for result in (ours, every_step):
        np.testing.assert_allclose(result.logdensity, expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(result.state.logdensity, expected, rtol=1e-5, atol=1e-5)
    # a run of no step keeps the initial state's log density
    none = sample_chains(jax.random.key(3), logp, algorithm(True), init, 0)
    np.testing.assert_allclose(none.logdensity, jax.vmap(logp)(init), rtol=1e-6)


def test_chain_keys_depend_on_the_chain_index_only():
    """Step t of chain c draws with fold_in(fold_in(fold_in(rng_key, 2), t), c): a chain's
    numbers are the same whether it runs with other chains or alone, in any batch."""
    from blackjax.mcmc.random_walk import normal_random_walk

    def noise_only(logdensity_fn):  # x <- x + eps: the position is the sum of the step noises
        return normal_random_walk(lambda x: jnp.zeros(()), 1.0)

    walk = noise_only(None)
    init = jnp.zeros((6, 2))
    whole = sample_chains(jax.random.key(5), _gauss, noise_only, init, 3)
    root = jax.random.fold_in(jax.random.key(5), 2)
    for c in range(6):
        total = jnp.zeros(2)
        for t in range(3):
            key = jax.random.fold_in(jax.random.fold_in(root, t), c)
            total = walk.step(key, walk.init(total))[0].position
        np.testing.assert_allclose(whole.positions[c], total, rtol=1e-6)
    np.testing.assert_array_equal(
        whole.positions[4:], sample_chains(jax.random.key(5), _gauss, noise_only, init, 3,
                                           chain_batch_size=4).positions[4:])


def _runtime_dots(hlo_text):
    """Matrix products a compiled HLO module executes: the ``dot`` instructions reachable from
    its entry, those of a ``while`` body counted once per iteration (its known trip count)."""
    import re

    blocks = _hlo_computations(hlo_text)
    entry = re.search(r"^ENTRY %?([\w.\-]+)", hlo_text, re.M).group(1)

    def count(name):
        body = blocks[name]
        total = body.count(" dot(")
        for line in body.splitlines():
            loop = re.search(r" while\(.*?body=%?([\w.\-]+)", line)
            if loop:
                trips = re.search(r'known_trip_count":\{"n":"(\d+)"', line)
                assert trips, "a while loop of unknown trip count"
                total += int(trips.group(1)) * count(loop.group(1))
                continue
            for called in re.findall(r"(?:calls|to_apply|branch_computations)=\{?%?([\w.\-]+)",
                                     line):
                total += count(called)
        return total

    return count(entry)


@pytest.mark.parametrize("key_blocks", [True, False])
def test_a_traced_run_whose_final_state_is_dropped_evaluates_one_gradient_per_step(
        monkeypatch, key_blocks):
    """Under a trace (a training loss) `sample_chains` runs its last step out of the loop: when
    the caller keeps the positions only, that step's gradient is dead and XLA drops it. A ULA
    run of n steps then takes n gradients (the initial state's, and one per step but the last),
    as a hand-written loop does, not n + 1; the numbers are those of an untraced run."""
    logp = _tanh_logdensity()
    from numpyro_ebm.sampling import chains

    if not key_blocks:  # each step hashes its own keys in the loop
        monkeypatch.setattr(chains, "_KEY_BLOCK_CHAINS", 0)
    kernel = functools.partial(ula, step_size=0.05)
    init = jax.random.normal(jax.random.key(2), (32, 3))
    positions_only = jax.jit(lambda k, x: sample_chains(k, logp, kernel, x, 6).positions)
    hlo = positions_only.lower(jax.random.key(3), init).compile().as_text()
    per_gradient = _runtime_dots(
        jax.jit(jax.vmap(jax.grad(logp))).lower(init).compile().as_text())
    assert per_gradient > 0
    assert _runtime_dots(hlo) == 6 * per_gradient
    np.testing.assert_allclose(
        positions_only(jax.random.key(3), init),
        sample_chains(jax.random.key(3), logp, kernel, init, 6).positions, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("num_steps, num_samples, thin", [(10, 0, 1), (10, 3, 2), (7, 7, 1)])
def test_step_keys_hashed_in_blocks_give_the_same_numbers(monkeypatch, num_steps, num_samples,
                                                          thin):
    """For a few chains, the keys of up to `_KEY_BLOCK // num_chains` steps are hashed in one
    call ahead of their loop; blocks of any size (here 3 steps of 4 chains: a loop of blocks
    and a last, shorter one) give the numbers of one key per step."""
    from blackjax.mcmc.random_walk import normal_random_walk

    from numpyro_ebm.sampling import chains

    init = jnp.zeros((4, 2))

    def run():  # a fresh kernel object: a new trace under the patched block size
        return sample_chains(jax.random.key(7), _gauss,
                             lambda f: normal_random_walk(lambda x: -0.5 * jnp.sum(x**2), 0.5),
                             init, num_steps, num_samples, thin)

    whole = run()
    monkeypatch.setattr(chains, "_KEY_BLOCK", 3 * 4)
    blocks = run()
    np.testing.assert_array_equal(blocks.positions, whole.positions)
    if num_samples:
        np.testing.assert_array_equal(blocks.samples, whole.samples)
    np.testing.assert_array_equal(blocks.acceptance_rate, whole.acceptance_rate)
    # the walk's numbers are those of the documented key: step t of chain c uses
    # fold_in(fold_in(fold_in(key, 2), t), c)
    root = jax.random.fold_in(jax.random.key(7), 2)
    walk = normal_random_walk(lambda x: -0.5 * jnp.sum(x**2), 0.5)
    state = walk.init(init[1])
    for t in range(num_steps):
        state = walk.step(jax.random.fold_in(jax.random.fold_in(root, t), 1), state)[0]
    np.testing.assert_allclose(whole.positions[1], state.position, rtol=1e-6)
