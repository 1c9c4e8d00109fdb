"""Applications of a trained energy: denoising (posterior sampling / MAP / Tweedie / Wiener)
checked against the closed-form Gaussian posterior, anomaly scores (with AUROC), classification.
The metrics themselves (PSNR, AUROC) are tested in test_diagnostics.py."""

from functools import partial

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
import pytest
from numpyro.contrib.module import flax_module
from numpyro.infer import MCMC, NUTS, SVI

import numpyro_ebm
from numpyro_ebm.applications import (
    anomaly_scores,
    class_probabilities,
    denoise,
    denoise_map,
    posterior_model,
    predict_min_energy,
    tweedie_denoise,
    wiener_denoise,
)
from numpyro_ebm.datasets import two_moons
from numpyro_ebm.estimators import no_guide
from numpyro_ebm.estimators.score_matching import DenoisingScoreMatching
from numpyro_ebm.evaluation import auroc, psnr
from numpyro_ebm.nets import MLPEnergy

# ------------------------------------------------------------------------------------------
# classification


def test_classification_helpers():
    e = jnp.array([[1.0, 0.0, 2.0], [0.5, 3.0, -1.0]])
    np.testing.assert_array_equal(predict_min_energy(e), [1, 2])
    p = class_probabilities(e)
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(p[0, 0] / p[0, 1], np.exp(-1.0), rtol=1e-5)


# ------------------------------------------------------------------------------------------
# denoising on a Gaussian prior: every method against the closed-form posterior mean

D, S = 3, 0.5


def gaussian_prior():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(D, D))
    cov = a @ a.T / D + 0.3 * np.eye(D)
    mean = rng.normal(size=D)
    precision = np.linalg.inv(cov)

    def energy(x):
        z = x - mean
        return 0.5 * jnp.einsum("...i,ij,...j->...", z, precision, z)

    y = jnp.asarray(mean + rng.normal(size=(4, D)) * 1.5, jnp.float32)
    # conjugate posterior: precision P + I/s^2, mean (P + I/s^2)^-1 (P mu + y / s^2)
    post_prec = precision + np.eye(D) / S**2
    post_mean = np.linalg.solve(post_prec, (precision @ mean)[:, None] + np.asarray(y).T / S**2).T
    return energy, mean, cov, y, post_mean, np.linalg.inv(post_prec)


def test_wiener_is_conjugate_posterior_mean():
    energy, mean, cov, y, post_mean, _ = gaussian_prior()
    np.testing.assert_allclose(wiener_denoise(y, mean, cov, S), post_mean, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="cov"):
        wiener_denoise(y, mean, cov[:2], S)


def test_denoise_mala_equals_wiener_within_mc_error():
    energy, mean, cov, y, post_mean, post_cov = gaussian_prior()
    kernel = partial(blackjax.mala, step_size=0.05)
    result = jax.jit(
        lambda key, y: denoise(key, energy, y, S, kernel, num_steps=1500, num_samples=1000,
                               num_chains=16)
    )(jax.random.key(0), y)
    assert result.mean.shape == (4, D) and result.samples.shape == (4, 1000, 16, D)
    assert np.all(np.asarray(result.acceptance_rate) > 0.5)
    chain_means = np.asarray(result.samples).mean(1)  # (4, 16, D): independent chains
    se = chain_means.std(1, ddof=1) / np.sqrt(16)
    err = np.abs(np.asarray(result.mean) - post_mean)
    assert np.all(err < 4.5 * se), (err / se).max()
    # and the posterior spread
    np.testing.assert_allclose(np.asarray(result.std), np.sqrt(np.diag(post_cov))[None].repeat(4, 0), rtol=0.1)


def test_denoise_map_and_tweedie_on_gaussian():
    energy, mean, cov, y, post_mean, _ = gaussian_prior()
    x_map = denoise_map(energy, y, S, num_updates=2000, optimizer=optax.adam(3e-2))
    np.testing.assert_allclose(x_map, post_mean, atol=2e-3)
    # Tweedie with the energy of the noisy data N(mu, cov + s^2 I) is the posterior mean
    noisy_prec = np.linalg.inv(cov + S**2 * np.eye(D))

    def noisy_energy(v):
        z = v - mean
        return 0.5 * jnp.einsum("...i,ij,...j->...", z, noisy_prec, z)

    np.testing.assert_allclose(tweedie_denoise(noisy_energy, y, S), post_mean, atol=1e-4)


def test_posterior_model_nuts_matches_closed_form():
    energy, mean, cov, y, post_mean, post_cov = gaussian_prior()
    model = posterior_model(energy, (D,), S)
    mcmc = MCMC(NUTS(model), num_warmup=200, num_samples=1000, progress_bar=False)
    mcmc.run(jax.random.key(1), y[0])
    x = np.asarray(mcmc.get_samples()["x"])
    se = np.sqrt(np.diag(post_cov) / 1000) * 2  # ESS >= N/4 for NUTS on a Gaussian
    assert np.all(np.abs(x.mean(0) - post_mean[0]) < 4 * se)


def test_denoise_argument_errors():
    energy, mean, cov, y, *_ = gaussian_prior()
    kernel = partial(blackjax.mala, step_size=0.05)
    with pytest.raises(ValueError, match="num_images"):
        denoise(jax.random.key(0), energy, y[0], S, kernel)
    with pytest.raises(ValueError, match="noise_scale"):
        denoise(jax.random.key(0), energy, y, -1.0, kernel)
    with pytest.raises(ValueError, match="init"):
        denoise(jax.random.key(0), energy, y, S, kernel, init=y[:2])
    # the posterior is built here: a kernel already bound to another density is refused
    with pytest.raises(TypeError, match="factory"):
        denoise(jax.random.key(0), energy, y, S, kernel(lambda x: -energy(x)))
    with pytest.raises(ValueError, match="num_updates"):
        denoise_map(energy, y, S, num_updates=0)


def test_metrics_and_applications_are_public_where_documented():
    """psnr/auroc live in numpyro_ebm.evaluation (and its diagnostics module, also reachable as
    numpyro_ebm.diagnostics); the application functions in numpyro_ebm.applications."""
    import numpyro_ebm.applications as apps
    from numpyro_ebm.applications import anomaly, classification, denoising

    assert numpyro_ebm.diagnostics.psnr is psnr and numpyro_ebm.diagnostics.auroc is auroc
    assert numpyro_ebm.evaluation.diagnostics.psnr is psnr
    assert apps.anomaly_scores is anomaly.anomaly_scores
    assert apps.predict_min_energy is classification.predict_min_energy
    assert apps.denoise is denoising.denoise
    assert not hasattr(apps, "psnr") and not hasattr(apps, "auroc")


# ------------------------------------------------------------------------------------------
# anomaly detection


def toy_model(data):
    net = flax_module("energy", MLPEnergy(hidden=(32, 32)), input_shape=(1, 2))
    with numpyro.plate("data", data.shape[0], subsample_size=256):
        batch = numpyro.subsample(data, event_dim=1)
        numpyro.sample("x", numpyro_ebm.Unnormalized(net, (2,)), obs=batch)


@pytest.mark.slow  # long statistical test: `pytest -m slow`
def test_anomaly_scores_are_energies_and_auroc_on_toy():
    key_train, key_test, key_out = jax.random.split(jax.random.key(0), 3)
    moons = two_moons()
    train = moons.sample(key_train, (1000,))
    inliers = moons.sample(key_test, (500,))
    angle = jax.random.uniform(key_out, (100,), maxval=2 * jnp.pi)
    outliers = 5.0 * jnp.stack([jnp.cos(angle), jnp.sin(angle)], -1)  # well off the moons
    svi = SVI(toy_model, no_guide, optax.adam(3e-3), loss=DenoisingScoreMatching(0.2))
    result = svi.run(jax.random.key(1), 400, train, progress_bar=False)
    E = numpyro_ebm.energy_fn(toy_model, "x", model_args=(train,))
    energy = partial(E, result.params)
    scores_in = anomaly_scores(energy, inliers)
    np.testing.assert_allclose(scores_in, energy(inliers))
    auc = float(auroc(scores_in, anomaly_scores(energy, outliers)))
    assert auc > 0.95, auc
    # the untrained (initial) energy is far from that
    init = svi.get_params(svi.init(jax.random.key(1), train))
    auc0 = float(auroc(E(init, inliers), E(init, outliers)))
    assert abs(auc0 - 0.5) < abs(auc - 0.5)
