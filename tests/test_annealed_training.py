"""Annealed training (issue 11, section 3): noise-conditional denoising score matching, annealed
Langevin dynamics, the sigma -> 0 energy as an ordinary site, and the default energy network."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
import pytest
from jax.scipy.special import logsumexp
from numpyro.contrib.module import flax_module
from numpyro.distributions import constraints
from numpyro.infer import SVI

import numpyro_ebm
from numpyro_ebm import (
    DenoisingScoreMatching,
    NoiseConditionalEnergy,
    Unnormalized,
    annealed_langevin,
    at_noise_level,
    geometric_sigmas,
    no_guide,
)
from numpyro_ebm.nets import MLPEnergy, default_energy, fourier_frequencies

# --------------------------------------------------------------------------------------------
# Noise-conditional DSM on Gaussian data: closed form per level
# --------------------------------------------------------------------------------------------

SIGMAS = (1.0, 0.5, 0.25)


def gaussian_data(n=1000, seed=0):
    rng = np.random.default_rng(seed)
    cov = np.array([[1.0, 0.6], [0.6, 0.8]])
    return jnp.asarray(rng.multivariate_normal([0.5, -1.0], cov, size=n), jnp.float32)


def per_level_gaussian_model(data):
    """E(x, sigma) = 0.5 (x - mu_i)^T L_i L_i^T (x - mu_i), i the level of sigma: one Gaussian
    per level, so DSM's optimum at each level is that level's smoothed Gaussian."""
    n_levels = len(SIGMAS)
    mu = numpyro.param("mu", jnp.zeros((n_levels, 2)))
    L = numpyro.param("L", jnp.broadcast_to(jnp.eye(2), (n_levels, 2, 2)),
                      constraint=constraints.lower_cholesky)

    def energy(x, sigma):
        sigma = jnp.broadcast_to(sigma, x.shape[:-1])
        i = jnp.argmin(jnp.abs(jnp.log(sigma)[..., None] - jnp.log(jnp.asarray(SIGMAS))), -1)
        P = jnp.einsum("...ij,...kj->...ik", L[i], L[i])
        d = x - mu[i]
        return 0.5 * jnp.einsum("...i,...ij,...j->...", d, P, d)

    with numpyro.plate("data", data.shape[0]):
        numpyro.sample("x", Unnormalized(NoiseConditionalEnergy(energy, SIGMAS), (2,)), obs=data)


def test_noise_conditional_dsm_learns_smoothed_precision_at_every_level():
    # Per level the minimizer of the expected loss is the precision (S + sigma_i^2 I)^-1 of the
    # smoothed data. Each example draws one of 3 levels per step, so a level sees ~1/3 of the
    # noise draws of single-sigma DSM (whose error is <= 0.0055 at 1000 points, test_score_matching).
    # Measured over SVI keys 0-2: max relative error per level <= 0.015, mean error <= 0.013.
    # Tolerances 0.05 and 0.06; ignoring the conditioning (the one precision of a single energy
    # trained on the same ladder) would be off by 15%, 46% and 64% at sigma = 1, 0.5, 0.25.
    data = gaussian_data()
    steps = 1500
    svi = SVI(per_level_gaussian_model, no_guide,
              optax.adam(optax.cosine_decay_schedule(3e-2, steps, alpha=0.01)),
              loss=DenoisingScoreMatching())  # sigma=None: the energy's own ladder
    result = svi.run(jax.random.key(0), steps, data, progress_bar=False)
    x = np.asarray(data, np.float64)
    m, S = x.mean(0), np.cov(x.T, bias=True)
    for i, sigma in enumerate(SIGMAS):
        L = np.asarray(result.params["L"][i], np.float64)
        target = np.linalg.inv(S + sigma**2 * np.eye(2))
        assert np.abs(L @ L.T - target).max() / np.abs(target).max() < 0.05, sigma
        np.testing.assert_allclose(result.params["mu"][i], m, atol=0.06)


def test_conditional_score_is_evaluated_at_each_examples_level():
    """The loss with given noise equals the hand-written per-example sum at per-example sigmas."""
    from numpyro_ebm.estimators.score_matching import denoising_score_matching_loss

    def energy(x, sigma):
        return 0.5 * jnp.sum(x**2, -1) / (1.0 + sigma**2)

    x = jnp.array([[0.3, -1.0], [2.0, 0.5], [-0.7, 0.1]])
    eps = jnp.array([[0.1, 0.2], [-0.3, 1.0], [0.5, -0.5]])
    sigma = jnp.array([1.0, 0.5, 0.25])
    got = denoising_score_matching_loss(lambda y: energy(y, sigma), x, eps, sigma)
    xt = x + sigma[:, None] * eps
    score = -xt / (1.0 + sigma[:, None] ** 2)
    want = np.mean(0.5 * np.sum((np.asarray(eps) + np.asarray(sigma)[:, None] * score) ** 2, -1))
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_dsm_sigma_none_needs_a_noise_conditional_energy():
    def model(data):
        with numpyro.plate("data", data.shape[0]):
            numpyro.sample("x", Unnormalized(lambda x: 0.5 * jnp.sum(x**2, -1), (2,)), obs=data)

    loss = DenoisingScoreMatching()
    with pytest.raises(ValueError, match="NoiseConditionalEnergy"):
        loss.loss(jax.random.key(0), {}, model, no_guide, jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="sigma"):
        DenoisingScoreMatching(sigma=-1.0)


def test_smallest_level_is_an_ordinary_site():
    energy = NoiseConditionalEnergy(lambda x, s: 0.5 * jnp.sum(x**2, -1) / (1 + s**2), (2.0, 0.1))
    d = Unnormalized(energy, (2,))
    x = jnp.array([[1.0, 2.0], [0.0, -1.0]])
    np.testing.assert_allclose(d.log_prob(x), -0.5 * jnp.sum(x**2, -1) / 1.01, rtol=1e-6)
    plain = at_noise_level(d)
    assert not isinstance(plain.energy_fn, NoiseConditionalEnergy)
    np.testing.assert_allclose(plain.log_prob(x), d.log_prob(x), rtol=1e-6)
    np.testing.assert_allclose(at_noise_level(d, 2.0).log_prob(x), -0.5 * jnp.sum(x**2, -1) / 5.0,
                               rtol=1e-6)
    # an ordinary site: any sampler runs on it
    ula = functools.partial(numpyro_ebm.ula, step_size=0.1)
    res = numpyro_ebm.sample_chains(jax.random.key(0), plain, ula, jnp.zeros((8, 2)), 10)
    assert res.positions.shape == (8, 2)
    with pytest.raises(TypeError, match="NoiseConditionalEnergy"):
        at_noise_level(Unnormalized(lambda x: jnp.sum(x, -1), (2,)))


# --------------------------------------------------------------------------------------------
# Annealed Langevin on a known mixture: the exact smoothed mixture energy
# --------------------------------------------------------------------------------------------

MU = jnp.array([[4.0, 0.0], [-4.0, 0.0]])
WEIGHTS = jnp.array([0.3, 0.7])
S2 = 0.25  # component variance (sd 0.5): the modes are 16 sd apart


def smoothed_mixture_energy(x, sigma):
    """E(x, sigma) = -log sum_k w_k N(x; mu_k, (s^2 + sigma^2) I), exactly."""
    var = S2 + jnp.asarray(sigma) ** 2
    sq = jnp.sum((x[..., None, :] - MU) ** 2, -1)  # (..., K)
    var = jnp.asarray(var)[..., None]
    return -logsumexp(jnp.log(WEIGHTS) - 0.5 * sq / var - jnp.log(2 * jnp.pi * var), axis=-1)


def test_annealed_langevin_recovers_mode_weights_where_langevin_does_not():
    # 4000 chains: the SE of a weight is sqrt(0.21 / 4000) = 0.007; tolerance 0.03 (> 4 SE).
    # Measured over keys 0-2 (and other starts): 0.311-0.314 (a +0.012 bias of the discretized
    # dynamics), mode mean within 0.02 of (4, 0), sd 0.495-0.516. Langevin at the smallest level
    # alone, from the same uniform start, keeps the start's split (measured 0.501-0.506: each
    # chain falls into the mode of its half-plane) and misses 0.3 by 0.2.
    sigmas = geometric_sigmas(8.0, 0.05, 12)
    energy = NoiseConditionalEnergy(smoothed_mixture_energy, sigmas)
    init = jax.random.uniform(jax.random.key(0), (4000, 2), minval=-8.0, maxval=8.0)
    res = annealed_langevin(jax.random.key(1), energy, init, num_steps=100, keep_levels=True)
    assert res.level_positions.shape == (12, 4000, 2)
    np.testing.assert_allclose(res.step_sizes[-1], 0.2 * 0.05**2, rtol=1e-5)
    x = np.asarray(res.positions)
    w_right = np.mean(x[:, 0] > 0)
    assert abs(w_right - 0.3) < 0.03, w_right
    # the samples sit in the modes, with the component spread (ULA at eps = 0.2 sigma_L^2)
    right = x[x[:, 0] > 0]
    np.testing.assert_allclose(right.mean(0), MU[0], atol=0.05)
    np.testing.assert_allclose(right.std(0), np.sqrt(S2 + 0.05**2), rtol=0.1)

    # the failing case: Langevin at the smallest level only (same number of steps in all)
    plain = annealed_langevin(jax.random.key(1), energy, init, sigmas=(0.05,), num_steps=1200)
    w_plain = np.mean(np.asarray(plain.positions)[:, 0] > 0)
    assert abs(w_plain - 0.3) > 0.15, w_plain


def _mixture_weight_model(sigmas):
    """The smoothed two-mode mixture of MU, S2 with a learnable weight (one logit for every
    level, as a network shares its weights across levels), noise-conditional on ``sigmas``."""

    def model(data):
        logit = numpyro.param("logit", 0.0)  # starts at w = 0.5

        def energy(x, sigma):
            var = (S2 + jnp.asarray(sigma) ** 2)[..., None]
            sq = jnp.sum((x[..., None, :] - MU) ** 2, -1)
            log_w = jax.nn.log_sigmoid(jnp.stack([logit, -logit]))
            return -logsumexp(log_w - 0.5 * sq / var - jnp.log(var), axis=-1)

        with numpyro.plate("data", data.shape[0], subsample_size=256):
            batch = numpyro.subsample(data, event_dim=1)
            numpyro.sample("x", Unnormalized(NoiseConditionalEnergy(energy, sigmas), (2,)),
                           obs=batch)

    return model


def test_noise_conditional_dsm_learns_mode_weights_that_one_level_cannot():
    # Modes 16 sd apart, weight 0.3 on the right one, 4000 draws. At a small sigma the score at
    # the data does not depend on the weight (each point's responsibility is 1 to its own
    # mode), so DSM at sigma = 0.05 alone leaves the weight where it started (measured: 0.5000
    # over seeds 0-5); the ladder's large levels, where the smoothed modes overlap, fix it.
    # Measured over seeds 0-5 (600 updates): learned minus the data's own weight -0.012 to
    # +0.012 (sd 0.008); the data's weight has SE sqrt(0.21 / 4000) = 0.007. Tolerance 0.04.
    rng = np.random.default_rng(0)
    right = rng.random(4000) < 0.3
    data = np.where(right[:, None], np.asarray(MU[0]), np.asarray(MU[1]))
    data = jnp.asarray(data + np.sqrt(S2) * rng.normal(size=data.shape), jnp.float32)
    steps = 600
    weights = {}
    for name, sigmas in [("ladder", geometric_sigmas(8.0, 0.05, 8)), ("one level", (0.05,))]:
        svi = SVI(_mixture_weight_model(sigmas), no_guide,
                  optax.adam(optax.cosine_decay_schedule(5e-2, steps, alpha=0.02)),
                  loss=DenoisingScoreMatching())
        result = svi.run(jax.random.key(0), steps, data, progress_bar=False)
        weights[name] = float(jax.nn.sigmoid(result.params["logit"]))
    assert abs(weights["ladder"] - 0.3) < 0.04, weights
    assert abs(weights["one level"] - 0.3) > 0.15, weights  # blind: the weight stays near 0.5


def test_annealed_langevin_on_an_unnormalized_site_and_denoise():
    energy = NoiseConditionalEnergy(smoothed_mixture_energy, geometric_sigmas(8.0, 0.05, 6))
    site = Unnormalized(energy, (2,))
    init = jnp.zeros((16, 2))
    res = annealed_langevin(jax.random.key(0), site, init, num_steps=20, denoise=True)
    assert res.positions.shape == (16, 2) and res.level_positions is None
    assert np.all(np.isfinite(np.asarray(res.positions)))
    with pytest.raises(ValueError, match="init_positions"):
        annealed_langevin(jax.random.key(0), site, jnp.zeros((16, 3)))
    with pytest.raises(ValueError, match="sigmas"):
        annealed_langevin(jax.random.key(0), smoothed_mixture_energy, init)
    with pytest.raises(ValueError, match="num_steps"):
        annealed_langevin(jax.random.key(0), energy, init, num_steps=0)
    with pytest.raises(ValueError, match="sigma_min"):
        geometric_sigmas(0.1, 1.0, 3)


# --------------------------------------------------------------------------------------------
# The default energy network
# --------------------------------------------------------------------------------------------


def test_mlp_energy_shapes_fourier_features_and_noise_input():
    x = jnp.ones((5, 3))
    net = MLPEnergy(hidden=(16,), fourier_features=8)
    params = net.init(jax.random.key(0), x)
    assert net.apply(params, x).shape == (5,)
    assert params["params"]["Dense_0"]["kernel"].shape == (3 + 2 * 8, 16)  # (x, sin, cos)
    B = fourier_frequencies(8, 3, 2.0)
    assert B.shape == (8, 3)
    np.testing.assert_array_equal(B, fourier_frequencies(8, 3, 2.0))  # a constant, no key
    assert "fourier" not in str(jax.tree_util.tree_structure(params))  # not a parameter

    cond = MLPEnergy(hidden=(16,), noise_conditional=True)
    p = cond.init(jax.random.key(0), x)  # sigma=None at init (flax_module's input_shape)
    assert p["params"]["Dense_0"]["kernel"].shape == (3 + 1, 16)
    assert cond.apply(p, x, jnp.full((5,), 0.3)).shape == (5,)
    assert not np.allclose(cond.apply(p, x, 0.3), cond.apply(p, x, 3.0))
    with pytest.raises(ValueError, match="noise_conditional"):
        net.apply(params, x, 0.5)
    with pytest.raises(ValueError, match="confinement"):
        MLPEnergy(confinement=-1.0).init(jax.random.key(0), x)


@pytest.mark.parametrize("fourier_features, radius", [(0, 0.0), (32, 0.0), (32, 2.0)])
def test_confinement_bounds_the_energy_from_below_in_the_tails(fourier_features, radius):
    # The network part grows at most linearly in |x| (swish MLP on x, sin, cos), so with c > 0
    # E(r u) >= c (r - r0)^2 / 2 - O(r): at r = 50 and 100 in random directions the energy
    # exceeds c (r - r0)^2 / 4, and exceeds the energy anywhere near the data (the unit disc).
    c = 0.5
    net = MLPEnergy(hidden=(32, 32), fourier_features=fourier_features, confinement=c,
                    confinement_radius=radius)
    params = net.init(jax.random.key(1), jnp.ones((1, 2)))
    u = jax.random.normal(jax.random.key(2), (256, 2))
    u = u / jnp.linalg.norm(u, axis=-1, keepdims=True)
    near = net.apply(params, u * jax.random.uniform(jax.random.key(3), (256, 1)))
    for r in (50.0, 100.0):
        far = net.apply(params, r * u)
        assert np.all(np.asarray(far) > c * (r - radius) ** 2 / 4)
        assert float(far.min()) > float(near.max())
    # without confinement the same network is not bounded below in every direction
    free = MLPEnergy(hidden=(32, 32), fourier_features=fourier_features)
    assert float(free.apply(params, 100.0 * u).min()) < c * 100.0**2 / 4
    if radius:  # within the radius the term is 0: the energy is the free network's
        np.testing.assert_allclose(net.apply(params, u), free.apply(params, u), rtol=1e-6)
        assert np.all(np.isfinite(np.asarray(jax.grad(lambda x: net.apply(params, x))(
            jnp.zeros(2)))))


def test_default_energy_in_a_model():
    def model(data):
        net = flax_module("energy", default_energy(hidden=(16, 16)), input_shape=(1, 2))
        with numpyro.plate("data", data.shape[0]):
            numpyro.sample("x", Unnormalized(net, (2,)), obs=data)

    data = jnp.ones((4, 2))
    svi = SVI(model, no_guide, optax.adam(1e-3), loss=DenoisingScoreMatching(0.1))
    state = svi.init(jax.random.key(0), data)
    E = numpyro_ebm.energy_fn(model, "x", model_args=(data,))
    assert E(svi.get_params(state), data).shape == (4,)
    net = default_energy()
    assert net.hidden == (128, 128) and net.fourier_features > 0 and net.confinement > 0


def test_noise_conditional_network_trains_and_samples_end_to_end():
    """MLPEnergy(noise_conditional=True) registered with flax_module, wrapped in a
    NoiseConditionalEnergy, trained by DSM on its ladder and sampled by annealed Langevin."""
    sigmas = geometric_sigmas(2.0, 0.1, 4)
    data = jax.random.normal(jax.random.key(0), (512, 2)) * 0.3 + jnp.array([1.0, -1.0])

    def model(data):
        net = flax_module("energy", MLPEnergy(hidden=(32, 32), noise_conditional=True),
                          input_shape=(1, 2))
        with numpyro.plate("data", data.shape[0], subsample_size=128):
            batch = numpyro.subsample(data, event_dim=1)
            numpyro.sample("x", Unnormalized(NoiseConditionalEnergy(net, sigmas), (2,)), obs=batch)

    svi = SVI(model, no_guide, optax.adam(3e-3), loss=DenoisingScoreMatching())
    result = svi.run(jax.random.key(1), 600, data, progress_bar=False)
    assert np.isfinite(result.losses[-50:]).all()
    assert result.losses[-50:].mean() < result.losses[:50].mean()
    site = numpyro.handlers.trace(numpyro.handlers.substitute(
        numpyro.handlers.seed(model, 0), result.params)).get_trace(data)["x"]["fn"]
    init = jax.random.uniform(jax.random.key(2), (256, 2), minval=-4.0, maxval=4.0)
    x = annealed_langevin(jax.random.key(3), site, init, num_steps=50).positions
    assert x.shape == (256, 2)
    # the samples gather around the data (mean within 0.2 of (1, -1))
    np.testing.assert_allclose(np.asarray(x).mean(0), [1.0, -1.0], atol=0.2)
    # the smallest level as an ordinary site: its energy is lower at the data than far away
    plain = at_noise_level(site)
    assert float(plain.energy(jnp.array([1.0, -1.0]))) < float(plain.energy(jnp.array([-3.0, 3.0])))
