"""Linear-chain CRF: forward algorithm, Viterbi, marginals, FFBS sampling against enumeration."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import logsumexp

from numpyro_ebm.models.crf import (
    LinearChainCRF,
    LinearChainCRFModel,
    crf_energy,
    crf_log_partition,
    viterbi,
)


@pytest.fixture(scope="module")
def crf():
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    return LinearChainCRF(
        jax.random.normal(k1, (5, 3)), jax.random.normal(k2, (3, 3)), jax.random.normal(k3, (3,))
    )


def all_tags(T, K):
    return jnp.array(list(itertools.product(range(K), repeat=T)))


def test_log_partition_and_log_prob_match_enumeration(crf):
    tags = all_tags(5, 3)
    energies = crf.energy(tags)
    np.testing.assert_allclose(crf.log_partition(), logsumexp(-energies), rtol=1e-5)
    np.testing.assert_allclose(jnp.exp(crf.log_prob(tags)).sum(), 1.0, rtol=1e-5)


def test_viterbi_is_minimum_energy(crf):
    tags = all_tags(5, 3)
    best = tags[jnp.argmin(crf.energy(tags))]
    np.testing.assert_array_equal(crf.viterbi(), best)


def test_marginals_match_enumeration(crf):
    tags = all_tags(5, 3)
    p = jnp.exp(crf.log_prob(tags))
    exact = jnp.stack([(p[:, None] * (tags[:, t, None] == jnp.arange(3))).sum(0) for t in range(5)])
    np.testing.assert_allclose(crf.marginals(), exact, atol=1e-5)


def test_sampling_matches_marginals(crf):
    n = 20000
    samples = crf.sample(jax.random.key(1), (n,))
    assert samples.shape == (n, 5)
    freq = jnp.stack([(samples[:, t, None] == jnp.arange(3)).mean(0) for t in range(5)])
    m = crf.marginals()
    se = jnp.sqrt(m * (1 - m) / n)
    assert jnp.all(jnp.abs(freq - m) < 4 * se + 1e-3)


def test_batched_and_energy_function():
    unary = jax.random.normal(jax.random.key(2), (4, 6, 2))
    trans = jnp.zeros((2, 2))
    d = LinearChainCRF(unary, trans)
    assert d.batch_shape == (4,) and d.event_shape == (6,)
    assert d.log_partition().shape == (4,)
    # zero transitions: independent tags, log Z = sum_t logsumexp_k U_t(k)
    np.testing.assert_allclose(d.log_partition(), logsumexp(unary, -1).sum(-1), rtol=1e-5)
    y = jnp.zeros((4, 6), dtype=jnp.int32)
    np.testing.assert_allclose(crf_energy(y, unary, trans), -unary[..., 0].sum(-1), rtol=1e-6)


def test_bad_shapes_are_errors():
    with pytest.raises(ValueError, match="transitions"):
        LinearChainCRF(jnp.zeros((5, 3)), jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match="unary"):
        LinearChainCRF(jnp.zeros(3), jnp.zeros((3, 3)))


def test_model_class_on_the_protocol():
    """LinearChainCRFModel: energy / log Z / distribution agree with the functions; its SVI model
    under Trace_ELBO with an empty guide is the exact negative log-likelihood."""
    import numpyro
    from numpyro.infer import Trace_ELBO

    from numpyro_ebm import no_guide

    crf = LinearChainCRFModel(num_tags=3, num_symbols=4)
    params = crf.init_params()
    assert set(params) == {"transitions", "start", "emission"}
    k1, k2, k3, k4 = jax.random.split(jax.random.key(5), 4)
    params = {"transitions": jax.random.normal(k1, (3, 3)), "start": jax.random.normal(k2, (3,)),
              "emission": jax.random.normal(k3, (4, 3))}
    symbols = jax.random.randint(k4, (6, 5), 0, 4)
    unary = params["emission"][symbols]
    tags = viterbi(unary, params["transitions"], params["start"])
    np.testing.assert_allclose(crf.energy(params, tags, symbols),
                               crf_energy(tags, unary, params["transitions"], params["start"]))
    np.testing.assert_allclose(crf.log_partition(params, symbols),
                               crf_log_partition(unary, params["transitions"], params["start"]))
    np.testing.assert_array_equal(crf.viterbi(params, symbols), tags)
    assert isinstance(crf.distribution(params, symbols), LinearChainCRF)
    nll = -crf.log_likelihood(params, tags, symbols).sum()
    svi_params = {f"crf_{k}": v for k, v in params.items()}
    loss = jax.jit(lambda p: Trace_ELBO().loss(jax.random.key(0), p, crf.model, no_guide, symbols,
                                               tags))(svi_params)
    np.testing.assert_allclose(loss, nll, rtol=1e-5)
    assert crf.get_params(svi_params).keys() == params.keys()
    # unary scores as inputs (no emission table)
    plain = LinearChainCRFModel(num_tags=3)
    p2 = {"transitions": params["transitions"], "start": params["start"]}
    np.testing.assert_allclose(plain.log_partition(p2, unary), crf.log_partition(params, symbols),
                               rtol=1e-6)
    with pytest.raises(ValueError, match=r"\(\.\.\., T, 3\)"):
        plain.energy(p2, tags, jnp.zeros((6, 5, 2)))
    with numpyro.handlers.seed(rng_seed=0):
        with pytest.raises(ValueError, match="inputs"):
            crf.model()


@pytest.mark.slow  # long statistical test: `pytest -m slow`
def test_crf_trained_by_exact_likelihood_reaches_bayes_accuracy():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parents[1] / "examples" / "sequence_labeling.py"
    spec = importlib.util.spec_from_file_location("sequence_labeling", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    r = mod.run(seed=0, num_train=1000, num_test=500, length=20, num_updates=600, verbose=False)
    # 10k test tokens: MC standard error of an accuracy ~0.005; the CRF has the HMM's
    # sufficient parametrization, so it should come within ~2 points of the Bayes decoder.
    assert r["crf"] > r["bayes"] - 0.02
    assert r["crf"] > r["majority"] + 0.1
