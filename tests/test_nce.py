"""Noise contrastive estimation as an SVI loss: self-normalization and the closed-form optimum on
Gaussian energies, finite-difference gradients, stability, jit + subsampled plates, bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from _gradcheck import check_grads_along_each_coordinate  # noqa: E402
from jax.flatten_util import ravel_pytree
from numpyro.distributions import constraints
from numpyro.infer import SVI

from numpyro_ebm import Unnormalized
from numpyro_ebm.estimators import no_guide
from numpyro_ebm.estimators.nce import NoiseContrastiveEstimation, nce_loss


def gaussian_energy(mu, P):
    return lambda x: 0.5 * jnp.einsum("...i,ij,...j->...", x - mu, P, x - mu)


def gaussian_model(data, subsample_size=None):
    """E(x) = 0.5 (x - mu)^T P (x - mu), P = L L^T, with a learnable log normalizer."""
    dim = data.shape[-1]
    mu = numpyro.param("mu", jnp.zeros(dim))
    L = numpyro.param("L", jnp.eye(dim), constraint=constraints.lower_cholesky)
    log_Z = numpyro.param("log_Z", 0.0)
    with numpyro.plate("data", data.shape[0], subsample_size=subsample_size):
        batch = numpyro.subsample(data, event_dim=1)
        numpyro.sample(
            "x", Unnormalized(gaussian_energy(mu, L @ L.T), (dim,), log_Z=log_Z), obs=batch
        )


def gaussian_data(dim, n, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    cov = A @ A.T + 0.5 * np.eye(dim)
    x = rng.multivariate_normal(rng.normal(size=dim), cov, size=n)
    return jnp.asarray(x, jnp.float32)


def wide_noise(data, factor=2.0):
    """Gaussian noise at the data mean with ``factor`` times the data covariance."""
    x = np.asarray(data, np.float64)
    return dist.MultivariateNormal(
        jnp.asarray(x.mean(0), jnp.float32), jnp.asarray(factor * np.cov(x.T), jnp.float32)
    )


def gaussian_log_Z(P):
    """log of the integral of exp(-0.5 (x - mu)^T P (x - mu)) over R^D."""
    dim = P.shape[0]
    return 0.5 * dim * math.log(2 * math.pi) - 0.5 * np.linalg.slogdet(P)[1]


# --------------------------------------------------------------------------------------------
# Closed form: Gaussian energies
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim, steps", [(2, 1000), pytest.param(5, 2000, marks=pytest.mark.slow)])
def test_nce_recovers_gaussian_and_its_log_normalizer(dim, steps):
    # ebm-notes setting: noise with twice the data covariance, 4 noise samples per data point.
    # Measured: 2-D 1000 steps, log_Z - closed form = -0.0008 nats, P within 0.17% of the
    # sample precision; 5-D 2000 steps, -0.004 nats and 0.8%. The sample precision (the ML
    # estimate) is the reference for P: NCE is a consistent estimator whose difference from ML
    # is a fraction of the sampling error sqrt(2/N) ~ 4.5% of the true precision (N = 1000).
    data = gaussian_data(dim, 1000)
    loss = NoiseContrastiveEstimation(wide_noise(data), num_noise=4)
    lr = optax.cosine_decay_schedule(2e-2, steps, alpha=0.01)
    svi = SVI(gaussian_model, no_guide, optax.adam(lr), loss=loss)
    params = svi.run(jax.random.key(0), steps, data, progress_bar=False).params
    L = np.asarray(params["L"], np.float64)
    P = L @ L.T
    x = np.asarray(data, np.float64)
    sample_precision = np.linalg.inv(np.cov(x.T, bias=True))
    # self-normalized: the learned log_Z is the log normalizer of the learned energy...
    assert abs(float(params["log_Z"]) - gaussian_log_Z(P)) < 0.05
    # ...and of the data's Gaussian
    assert abs(float(params["log_Z"]) - gaussian_log_Z(sample_precision)) < 0.05
    assert np.abs(P - sample_precision).max() / np.abs(sample_precision).max() < 0.03
    np.testing.assert_allclose(params["mu"], x.mean(0), atol=0.05)


def test_loss_is_minimal_at_self_normalization():
    # With mu and P at their true values, the NCE loss as a function of log_Z alone is minimized
    # at the true log normalizer (its population optimum); checked on a dense 1-D grid.
    data = gaussian_data(2, 4000, seed=1)
    x = np.asarray(data, np.float64)
    m, S = x.mean(0), np.cov(x.T, bias=True)
    params = {
        "mu": jnp.asarray(m, jnp.float32),
        "L": jnp.asarray(np.linalg.cholesky(np.linalg.inv(S)), jnp.float32),
    }
    loss = NoiseContrastiveEstimation(wide_noise(data), num_noise=8)
    true_log_Z = gaussian_log_Z(np.linalg.inv(S))
    grid = true_log_Z + jnp.linspace(-0.5, 0.5, 101)
    f = jax.jit(
        jax.vmap(
            lambda c: loss.loss(
                jax.random.key(0), {**params, "log_Z": c}, gaussian_model, no_guide, data
            )
        )
    )
    best = float(grid[jnp.argmin(f(grid))])
    # 4000 data and 32000 noise points: the empirical optimum is within ~0.02 nats
    assert abs(best - true_log_Z) < 0.05


# --------------------------------------------------------------------------------------------
# Gradients and numerics
# --------------------------------------------------------------------------------------------


def scalar_model(data):
    mu = numpyro.param("mu", 0.0)
    a = numpyro.param("a", 0.0)
    log_Z = numpyro.param("log_Z", 0.0)
    E = lambda x: 0.5 * jnp.exp(a) * (x - mu) ** 2
    with numpyro.plate("data", data.shape[0]):
        numpyro.sample("x", Unnormalized(E, (), log_Z=log_Z), obs=data)


@pytest.mark.parametrize("num_noise", [1, 3])
def test_gradient_matches_finite_differences(num_noise):
    with jax.enable_x64(True):
        data = jnp.asarray(np.random.default_rng(2).normal(0.5, 1.2, size=40))
        params = {"mu": jnp.asarray(0.2), "a": jnp.asarray(-0.3), "log_Z": jnp.asarray(0.4)}
        loss = NoiseContrastiveEstimation(dist.Normal(0.0, 2.0), num_noise=num_noise)
        flat, unravel = ravel_pytree(params)
        f = lambda z: loss.loss(jax.random.key(3), unravel(z), scalar_model, no_guide, data)
        check_grads_along_each_coordinate(f, flat, rtol=1e-6, atol=1e-9)


def test_gradient_matches_hand_derived():
    # d L / d theta = -mean_n (1 - s(G(x_n))) dG(x_n) + nu mean_k s(G(y_k)) dG(y_k), with
    # G = -0.5 p (z - mu)^2 - log_Z - log p_n(z) - log nu and s the logistic function.
    x = jnp.asarray(np.random.default_rng(4).normal(size=30), jnp.float32)
    y = jnp.asarray(np.random.default_rng(5).normal(scale=2.0, size=(2, 30)), jnp.float32)
    noise, nu = dist.Normal(0.0, 2.0), 2
    mu, a, c = 0.3, 0.2, 1.1

    def logits(params, z):
        E = 0.5 * jnp.exp(params["a"]) * (z - params["mu"]) ** 2
        return -E - params["log_Z"] - noise.log_prob(z) - math.log(nu)

    params = {"mu": jnp.asarray(mu), "a": jnp.asarray(a), "log_Z": jnp.asarray(c)}
    ours = jax.jit(jax.grad(lambda p: nce_loss(logits(p, x), logits(p, y), nu)))(params)

    def dG(z):  # gradient of G in (mu, a, log_Z) at each z
        p = math.exp(a)
        return {"mu": p * (z - mu), "a": -0.5 * p * (z - mu) ** 2, "log_Z": -jnp.ones_like(z)}

    sx, sy = jax.nn.sigmoid(logits(params, x)), jax.nn.sigmoid(logits(params, y))
    for name in params:
        hand = -jnp.mean((1 - sx) * dG(x)[name]) + nu * jnp.mean(sy * dG(y)[name])
        np.testing.assert_allclose(ours[name], hand, rtol=1e-5, atol=1e-7)


def test_loss_is_stable_for_large_logits():
    # log(sigmoid(-200)) underflows to -inf in float32; log_sigmoid gives -200.
    value = nce_loss(jnp.asarray([-200.0]), jnp.asarray([200.0]), 1)
    np.testing.assert_allclose(value, 400.0, rtol=1e-6)
    grads = jax.grad(lambda g: nce_loss(g[:1], g[1:], 1))(jnp.asarray([-200.0, 200.0]))
    np.testing.assert_allclose(grads, [-1.0, 1.0], rtol=1e-6)


def test_multivariate_normal_noise_log_prob_matches_numpyro():
    noise = wide_noise(gaussian_data(3, 100))
    loss = NoiseContrastiveEstimation(noise)
    z = noise.sample(jax.random.key(6), (4, 50))
    ours, numpyro_log_prob = jax.jit(lambda z: (loss.noise_log_prob(z), noise.log_prob(z)))(z)
    np.testing.assert_allclose(ours, numpyro_log_prob, rtol=1e-5, atol=1e-5)


def test_any_noise_distribution_with_the_event_shape():
    data = gaussian_data(2, 64)
    noise = dist.StudentT(4.0, jnp.zeros(2), 2.0 * jnp.ones(2)).to_event(1)
    loss = NoiseContrastiveEstimation(noise, num_noise=2)
    params = {"mu": jnp.zeros(2), "L": jnp.eye(2), "log_Z": jnp.asarray(1.0)}
    value = jax.jit(lambda p: loss.loss(jax.random.key(0), p, gaussian_model, no_guide, data))(
        params
    )
    assert np.isfinite(value) and value > 0


# --------------------------------------------------------------------------------------------
# Through SVI: jit and subsampled plates
# --------------------------------------------------------------------------------------------


def test_jit_and_subsampled_plate():
    data = gaussian_data(2, 2000, seed=3)
    loss = NoiseContrastiveEstimation(wide_noise(data), num_noise=2)
    params = {"mu": jnp.zeros(2), "L": jnp.eye(2), "log_Z": jnp.asarray(1.0)}
    k1, k2 = jax.random.key(1), jax.random.key(2)

    @jax.jit
    def check(params):
        f = lambda k: loss.loss(k, params, gaussian_model, no_guide, data, subsample_size=128)
        return f(k1), f(k2)

    at_k1, at_k2 = check(params)
    assert abs(float(at_k1) - float(at_k2)) > 1e-3  # new minibatch and noise with a new key

    svi = SVI(gaussian_model, no_guide, optax.adam(1e-2), loss=loss, subsample_size=128)
    result = svi.run(jax.random.key(0), 300, data, progress_bar=False)
    assert np.all(np.isfinite(result.losses))
    assert result.losses[-50:].mean() < result.losses[:50].mean()


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"noise": "gaussian"}, TypeError, "noise"),
        ({"noise": dist.Normal(0.0, 1.0), "num_noise": 0}, ValueError, "num_noise"),
        ({"noise": dist.Normal(0.0, 1.0), "num_noise": 2.0}, TypeError, "num_noise"),
        ({"noise": dist.Normal(jnp.zeros(2), 1.0)}, ValueError, "to_event"),
    ],
)
def test_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        NoiseContrastiveEstimation(**kwargs)


def test_noise_event_shape_must_match_the_site():
    loss = NoiseContrastiveEstimation(dist.Normal(jnp.zeros(3), 1.0).to_event(1))
    params = {"mu": jnp.zeros(2), "L": jnp.eye(2), "log_Z": jnp.asarray(0.0)}
    with pytest.raises(ValueError, match=r"event_shape \(3,\).*event_shape \(2,\)"):
        loss.loss(jax.random.key(0), params, gaussian_model, no_guide, gaussian_data(2, 8))


def test_site_without_log_Z():
    def model(data):
        with numpyro.plate("data", data.shape[0]):
            numpyro.sample("x", Unnormalized(lambda x: 0.5 * x**2, ()), obs=data)

    loss = NoiseContrastiveEstimation(dist.Normal(0.0, 2.0))
    with pytest.raises(ValueError, match="log_Z"):
        loss.loss(jax.random.key(0), {}, model, no_guide, jnp.zeros(5))


def test_model_without_unnormalized_site():
    def model(data):
        numpyro.sample("x", dist.Normal(), obs=data)

    loss = NoiseContrastiveEstimation(dist.Normal(0.0, 2.0))
    with pytest.raises(ValueError, match="no observed numpyro_ebm.Unnormalized site"):
        loss.loss(jax.random.key(0), {}, model, no_guide, jnp.zeros(5))
