"""Discrete samplers (single-site Gibbs, block Gibbs, Gibbs-with-gradients) against exact
enumeration on small models; tolerances are 4 Monte Carlo standard errors over independent chains."""

import importlib
import itertools
from functools import partial

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numpyro_ebm
from numpyro_ebm.models import Ising
from numpyro_ebm.sampling.block_gibbs import BlockGibbsState, block_gibbs
from numpyro_ebm.sampling.gibbs import GibbsInfo, GibbsState, gibbs
from numpyro_ebm.sampling.gibbs_with_gradients import GWGState, gibbs_with_gradients

D = 6


def _quadratic(values, seed=0, scale=0.6):
    """log p(x) = x W x / 2 + b x over x in values^D, with its exact marginal means."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(D, D)) * scale
    w = np.triu(w, 1)
    w = jnp.asarray(w + w.T, jnp.float32)
    b = jnp.asarray(rng.normal(size=D) * scale, jnp.float32)

    def logdensity(x):
        return 0.5 * x @ w @ x + b @ x

    configs = jnp.asarray(list(itertools.product(values, repeat=D)), jnp.float32)
    probs = jax.nn.softmax(jax.vmap(logdensity)(configs))
    return logdensity, probs @ configs, configs, probs


def _chain_means(samples):
    """(num_samples, num_chains, ...) -> per-chain time averages, their mean and standard error."""
    per_chain = samples.mean(0)
    n = per_chain.shape[0]
    return per_chain.mean(0), per_chain.std(0) / np.sqrt(n)


def _run(kernel, logdensity, init, num_steps=100, num_samples=80, seed=0):
    return numpyro_ebm.sample_chains(
        jax.random.key(seed), logdensity, kernel, init, num_steps, num_samples=num_samples
    )


@pytest.mark.parametrize("scan", ["random", "systematic"])
def test_gibbs_binary_marginals_match_enumeration(scan):
    logdensity, exact, _, _ = _quadratic((0, 1))
    result = _run(partial(gibbs, values=(0, 1), scan=scan), logdensity, jnp.zeros((600, D)))
    mean, se = _chain_means(result.samples)
    np.testing.assert_array_less(np.abs(mean - exact), 4 * se + 1e-3)
    # the reported flip rate is a fraction, the same in both fields
    assert 0.05 < float(result.acceptance_rate.mean()) < 0.95
    assert isinstance(result.state, GibbsState)


def test_gibbs_spins_and_sensitivity():
    """Spins in {-1, +1}; the same estimate against a *wrong* model (tempered) must fail."""
    logdensity, exact, configs, _ = _quadratic((-1, 1), seed=1, scale=0.4)
    result = _run(partial(gibbs, values=(-1, 1)), logdensity, jnp.ones((600, D)))
    mean, se = _chain_means(result.samples)
    np.testing.assert_array_less(np.abs(mean - exact), 4 * se + 1e-3)
    wrong = jax.nn.softmax(0.5 * jax.vmap(logdensity)(configs)) @ configs
    assert np.max(np.abs(mean - wrong) / se) > 8


def test_gibbs_categorical_marginals():
    """A 4-site Potts chain with K = 3 and random fields: per-site value frequencies."""
    k, n = 3, 4
    rng = np.random.default_rng(2)
    fields = jnp.asarray(rng.normal(size=(n, k)), jnp.float32)

    def logdensity(x):
        onehot = jax.nn.one_hot(x, k)
        return jnp.sum(onehot * fields) + 0.8 * jnp.sum(x[1:] == x[:-1])

    configs = jnp.asarray(list(itertools.product(range(k), repeat=n)), jnp.int32)
    probs = jax.nn.softmax(jax.vmap(logdensity)(configs))
    exact = jnp.einsum("c,cnk->nk", probs, jax.nn.one_hot(configs, k))
    result = _run(partial(gibbs, num_categories=k), logdensity,
                  jnp.zeros((600, n), jnp.int32), num_steps=80, num_samples=60)
    assert result.samples.dtype == jnp.int32
    mean, se = _chain_means(jax.nn.one_hot(result.samples, k))
    np.testing.assert_array_less(np.abs(mean - exact), 4 * se + 1e-3)


def test_gibbs_partial_sweeps_and_systematic_pointer():
    logdensity, _, _, _ = _quadratic((0, 1))
    algo = gibbs(logdensity, values=(0, 1), scan="systematic", num_sites_per_step=4)
    state = algo.init(jnp.zeros(D))
    state, info = jax.jit(algo.step)(jax.random.key(0), state)
    assert int(state.site) == 4
    state, _ = algo.step(jax.random.key(1), state)
    assert int(state.site) == 8 % D
    assert isinstance(info, GibbsInfo) and info.acceptance_rate == info.flip_rate
    np.testing.assert_allclose(state.logdensity, logdensity(state.position), rtol=1e-6)


def test_gibbs_with_gradients_matches_enumeration():
    logdensity, exact, _, _ = _quadratic((0, 1), seed=3)
    result = _run(partial(gibbs_with_gradients, num_flips=D), logdensity, jnp.zeros((600, D)),
                  num_steps=120)
    mean, se = _chain_means(result.samples)
    np.testing.assert_array_less(np.abs(mean - exact), 4 * se + 1e-3)
    assert 0.3 < float(result.acceptance_rate.mean()) <= 1.0


def test_gibbs_with_gradients_spins():
    logdensity, exact, _, _ = _quadratic((-1, 1), seed=4, scale=0.4)
    result = _run(partial(gibbs_with_gradients, values=(-1, 1), num_flips=D), logdensity,
                  jnp.ones((600, D)), num_steps=120)
    mean, se = _chain_means(result.samples)
    np.testing.assert_array_less(np.abs(mean - exact), 4 * se + 1e-3)


def test_block_gibbs_ising_conditionals_match_exact():
    """Generic block Gibbs with the Ising checkerboard conditionals on an open 3x4 lattice."""
    ising = Ising((3, 4), periodic=False)
    params = ising.init_params(beta=0.5, field=0.1)
    configs = jnp.asarray(list(itertools.product((-1, 1), repeat=12)), jnp.float32)
    configs = configs.reshape(-1, 3, 4)
    probs = jax.nn.softmax(ising.logdensity(params, configs))
    exact_energy = probs @ ising.energy(params, configs)
    kernel = partial(block_gibbs, conditional_samplers=ising.block_conditionals(params))
    logdensity = partial(ising.logdensity, params)
    result = _run(kernel, logdensity, ising.init_spins(jax.random.key(1), 1000),
                  num_steps=80, num_samples=60)
    assert isinstance(result.state, BlockGibbsState)
    mean, se = _chain_means(ising.energy(params, result.samples))
    assert abs(float(mean - exact_energy)) < 4 * float(se)
    np.testing.assert_allclose(result.logdensity, logdensity(result.positions), rtol=1e-5)


def test_block_gibbs_pytree_position():
    """Two independent binary blocks as a dict pytree; each conditional redraws one block."""
    p = {"a": 0.2, "b": 0.7}

    def make(name):
        def sample(key, pos):
            new = jax.random.bernoulli(key, p[name], pos[name].shape).astype(jnp.float32)
            return {**pos, name: new}

        return sample

    def logdensity(pos):
        return sum(jnp.sum(pos[n] * np.log(p[n]) + (1 - pos[n]) * np.log(1 - p[n])) for n in p)

    init = {"a": jnp.zeros((2000, 3)), "b": jnp.zeros((2000, 2))}
    result = _run(partial(block_gibbs, conditional_samplers=[make("a"), make("b")]), logdensity,
                  init, num_steps=5, num_samples=1)
    np.testing.assert_allclose(result.positions["a"].mean(), 0.2, atol=0.02)
    np.testing.assert_allclose(result.positions["b"].mean(), 0.7, atol=0.02)
    flip = 0.2 * 0.8 * 2 * 3 / 5 + 0.7 * 0.3 * 2 * 2 / 5  # stationary P(change) per entry
    np.testing.assert_allclose(result.acceptance_rate.mean(), flip, atol=0.02)


def test_argument_errors():
    f = lambda x: -jnp.sum(x)
    with pytest.raises(ValueError, match="num_categories"):
        gibbs(f, values=(0, 1), num_categories=3)
    with pytest.raises(ValueError, match="scan"):
        gibbs(f, scan="diagonal")
    with pytest.raises(ValueError, match="distinct"):
        gibbs(f, values=(1, 1))
    with pytest.raises(ValueError, match="at least two"):
        gibbs(f, values=(1,))
    with pytest.raises(TypeError, match="num_sites_per_step"):
        gibbs(f, num_sites_per_step=1.5)
    with pytest.raises(ValueError, match="outside the allowed values"):
        gibbs(f, values=(0, 1)).init(jnp.array([0.0, 2.0]))
    with pytest.raises(TypeError, match="single array"):
        gibbs(f).init({"x": jnp.zeros(2)})
    with pytest.raises(TypeError, match="float"):
        gibbs_with_gradients(f).init(jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match="exactly two"):
        gibbs_with_gradients(f, values=(0, 1, 2))
    with pytest.raises(TypeError, match="conditional_samplers"):
        block_gibbs(f, conditional_samplers=lambda k, x: x)
    with pytest.raises(ValueError, match="empty"):
        block_gibbs(f, conditional_samplers=[])


@pytest.mark.parametrize(
    "name, kwargs, state_type",
    [
        ("gibbs", {"values": (0, 1)}, GibbsState),
        ("block_gibbs", {"conditional_samplers": [lambda k, x: x]}, BlockGibbsState),
        ("gibbs_with_gradients", {"values": (0, 1)}, GWGState),
    ],
)
def test_discrete_samplers_are_blackjax_sampling_apis(name, kwargs, state_type):
    """Each sampler is a ``blackjax.GenerateSamplingAPI`` (like ``blackjax.mala``) from its own
    module: calling it builds a ``SamplingAlgorithm``; ``.init``/``.build_kernel`` are the module's
    low-level pieces and run the same chain as the built algorithm."""
    api = getattr(numpyro_ebm, name)
    module = importlib.import_module(f"numpyro_ebm.sampling.{name}")
    assert isinstance(api, blackjax.GenerateSamplingAPI)
    assert api.init is module.init and api.build_kernel is module.build_kernel
    logdensity, _, _, _ = _quadratic((0, 1))
    algo = api(logdensity, **kwargs)
    x0 = jnp.zeros(D).at[::2].set(1.0)
    state = algo.init(x0)
    assert isinstance(state, state_type) and isinstance(api.init(x0, logdensity), state_type)
    kernel = api.build_kernel(next(iter(kwargs.values())))  # values, or the block samplers
    key = jax.random.key(5)
    new, _ = algo.step(key, state)
    low_level, _ = kernel(key, api.init(x0, logdensity), logdensity)
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(low_level)):
        np.testing.assert_array_equal(a, b)
