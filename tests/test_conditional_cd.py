"""Contrastive divergence on a continuous conditional energy E(y, x): the chains run over y with
each example's x held fixed.

Data: y | x from a known bimodal conditional density, y = +-(w0 + w1 x) + 0.3 noise, x ~ U(0, 1).
The energy E(y, x) = -logsumexp(-(y -+ a(x))^2 / 2 s^2), a(x) = w0 + w1 x, is trained by CD-20
(ULA) from a wrong start; the learned conditional NLL on held-out (x, y) (log Z(x) per x by 1-D
quadrature) is within 0.1 nats of the truth's.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro.infer import SVI

import numpyro_ebm
from numpyro_ebm import (
    ContrastiveDivergence,
    PersistentContrastiveDivergence,
    Unnormalized,
    no_guide,
)

W_TRUE, S_TRUE = (1.0, 1.5), 0.3


def sample_data(rng_key, n):
    k_x, k_sign, k_noise = jax.random.split(rng_key, 3)
    x = jax.random.uniform(k_x, (n,))
    sign = jnp.where(jax.random.bernoulli(k_sign, 0.5, (n,)), 1.0, -1.0)
    return x, sign * (W_TRUE[0] + W_TRUE[1] * x) + S_TRUE * jax.random.normal(k_noise, (n,))


def energy(y, x, w, log_s):
    """E(y, x) = -log(exp(-(y - a)^2 / 2s^2) + exp(-(y + a)^2 / 2s^2)), a = w0 + w1 x."""
    a = w[0] + w[1] * x
    z = jnp.stack([-((y - a) ** 2), -((y + a) ** 2)]) / (2 * jnp.exp(2 * log_s))
    return -jax.nn.logsumexp(z, axis=0)


def conditional_model(x, y):
    w = numpyro.param("w", jnp.array([0.5, 0.0]))
    log_s = numpyro.param("log_s", jnp.log(0.6))
    with numpyro.plate("data", x.shape[0], subsample_size=256) as idx:
        xb = x[idx]  # the minibatch's conditioning inputs, closed over by the energy
        numpyro.sample("y", Unnormalized(lambda v: energy(v, xb, w, log_s)), obs=y[idx])


def heldout_nll(x, y, w, log_s):
    """Mean -log p(y | x) with log Z(x) by quadrature on [-6, 6] for every x."""
    grid = jnp.linspace(-6.0, 6.0, 4001)
    log_Z = jax.scipy.special.logsumexp(-energy(grid[:, None], x[None, :], w, log_s), axis=0)
    log_Z = log_Z + jnp.log(grid[1] - grid[0])
    return float(jnp.mean(energy(y, x, w, log_s) + log_Z))


@pytest.mark.parametrize(
    "estimator", [pytest.param("cd", marks=pytest.mark.slow), "pcd"]  # cd: 37 s, pcd: 18 s
)
def test_cd_pcd_train_conditional_energy_to_true_conditional_nll(estimator):
    x, y = sample_data(jax.random.key(0), 4000)
    ula = functools.partial(numpyro_ebm.ula, step_size=0.003)
    if estimator == "cd":
        loss = ContrastiveDivergence(ula, num_steps=20)
        guide = no_guide
    else:  # one persistent chain per example (4000), 5 steps per visit
        loss = PersistentContrastiveDivergence(ula, num_steps=5, reinit_prob=0.0)
        guide = loss.make_guide(conditional_model)
    svi = SVI(conditional_model, guide, optax.adam(0.02), loss=loss)
    result = svi.run(jax.random.key(1), 1500, x, y, progress_bar=False)
    if estimator == "pcd":
        chains = result.state.mutable_state["pcd_chains"]["y"]
        assert chains["positions"].shape == (4000,) and bool(chains["visited"].all())
    x_test, y_test = sample_data(jax.random.key(2), 2000)
    truth = heldout_nll(x_test, y_test, jnp.array(W_TRUE), jnp.log(S_TRUE))
    # the quadrature matches the mixture's closed form
    a = W_TRUE[0] + W_TRUE[1] * x_test
    mixture = dist.MixtureSameFamily(
        dist.Categorical(probs=jnp.full((x_test.shape[0], 2), 0.5)),
        dist.Normal(jnp.stack([a, -a], -1), S_TRUE),
    )
    assert abs(truth + float(jnp.mean(mixture.log_prob(y_test)))) < 1e-3
    learned = heldout_nll(x_test, y_test, result.params["w"], result.params["log_s"])
    assert abs(learned - truth) < 0.1, (learned, truth, result.params)
    assert abs(math.exp(float(result.params["log_s"])) - S_TRUE) < 0.05


def test_conditional_energy_is_detected_and_pcd_needs_make_guide():
    from numpyro_ebm.estimators.contrastive import scores_single_events

    x = jnp.linspace(0.0, 1.0, 8)
    conditional = Unnormalized(lambda v: energy(v, x, jnp.array([1.0, 1.0]), 0.0))
    plain = Unnormalized(lambda v: 0.5 * v**2)
    assert not scores_single_events(conditional, jnp.zeros(8))
    assert scores_single_events(plain, jnp.zeros(8))

    x_data, y_data = sample_data(jax.random.key(0), 512)
    pcd = PersistentContrastiveDivergence(
        functools.partial(numpyro_ebm.ula, step_size=0.003), num_chains=16,
        init_dist=dist.Normal(0.0, 1.0),
    )
    svi = SVI(conditional_model, pcd.guide, optax.adam(0.01), loss=pcd)
    state = svi.init(jax.random.key(0), x_data, y_data)
    with pytest.raises(ValueError, match="site 'y'.*make_guide"):
        svi.update(state, x_data, y_data)
