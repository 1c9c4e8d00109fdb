"""Score matching estimators (exact, sliced, denoising) as SVI losses: closed-form optima on Gaussian
energies, hand-derived and finite-difference gradients, jit + subsampled plates, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
import pytest
from _gradcheck import check_grads_along_each_coordinate  # noqa: E402
from jax.flatten_util import ravel_pytree
from numpyro.distributions import constraints
from numpyro.infer import SVI

from numpyro_ebm import Unnormalized, label_ebm
from numpyro_ebm.estimators import no_guide
from numpyro_ebm.estimators.score_matching import (
    DenoisingScoreMatching,
    ScoreMatching,
    SlicedScoreMatching,
    denoising_score_matching_loss,
    score_matching_loss,
    sliced_score_matching_loss,
)

# --------------------------------------------------------------------------------------------
# Models and data
# --------------------------------------------------------------------------------------------


def gaussian_energy(mu, P):
    return lambda x: 0.5 * jnp.einsum("...i,ij,...j->...", x - mu, P, x - mu)


def gaussian_model(data):
    """E(x) = 0.5 (x - mu)^T P (x - mu), P = L L^T with L lower triangular, positive diagonal."""
    dim = data.shape[-1]
    mu = numpyro.param("mu", jnp.zeros(dim))
    L = numpyro.param("L", jnp.eye(dim), constraint=constraints.lower_cholesky)
    with numpyro.plate("data", data.shape[0]):
        numpyro.sample("x", Unnormalized(gaussian_energy(mu, L @ L.T), (dim,)), obs=data)


def gaussian_data(dim, n, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    cov = A @ A.T + 0.5 * np.eye(dim)
    x = rng.multivariate_normal(rng.normal(size=dim), cov, size=n)
    return jnp.asarray(x, jnp.float32)


def sample_moments(x):
    x = np.asarray(x, np.float64)
    return x.mean(0), np.cov(x.T, bias=True)  # ML covariance: 1/N


def fit(loss, data, num_steps, lr, seed=0, model=gaussian_model):
    svi = SVI(model, no_guide, optax.adam(lr), loss=loss)
    result = svi.run(jax.random.key(seed), num_steps, data, progress_bar=False)
    L = np.asarray(result.params["L"], np.float64)
    return np.asarray(result.params["mu"], np.float64), L @ L.T, result


def rel_err(P, target):
    return np.abs(P - target).max() / np.abs(target).max()


def scalar_model(data):
    """1-D Gaussian energy E(x) = 0.5 exp(a) (x - mu)^2, event_shape ()."""
    mu = numpyro.param("mu", 0.0)
    a = numpyro.param("a", 0.0)
    E = lambda x: 0.5 * jnp.exp(a) * (x - mu) ** 2
    with numpyro.plate("data", data.shape[0]):
        numpyro.sample("x", Unnormalized(E, ()), obs=data)


def loss_of(loss, params, data, model=scalar_model, key=0):
    """The loss at ``params``, jit-compiled (eager tracing of the model is far slower)."""
    return jitted_loss(loss, model)(jax.random.key(key), params, data)


def jitted_loss(loss, model):
    return jax.jit(lambda key, params, data: loss.loss(key, params, model, no_guide, data))


# --------------------------------------------------------------------------------------------
# Closed-form optima (Gaussian energies, 2-D and 5-D)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [2, 5])
def test_score_matching_reaches_sample_precision(dim):
    # The exact objective is deterministic and strictly convex in P around its optimum
    # P = S^-1 (S the ML sample covariance), mu = sample mean: float32 precision is reachable.
    data = gaussian_data(dim, 1000)
    mu, P, _ = fit(ScoreMatching(), data, 800, 3e-2)
    m, S = sample_moments(data)
    assert rel_err(P, np.linalg.inv(S)) < 1e-4
    np.testing.assert_allclose(mu, m, atol=1e-4)


def test_score_matching_gradient_vanishes_at_closed_form():
    data = gaussian_data(3, 500)
    m, S = sample_moments(data)
    L = np.linalg.cholesky(np.linalg.inv(S))
    params = {"mu": jnp.asarray(m, jnp.float32), "L": jnp.asarray(L, jnp.float32)}
    grads = jax.grad(lambda p: loss_of(ScoreMatching(), p, data, gaussian_model))(params)
    for g in jax.tree.leaves(grads):
        assert np.abs(np.asarray(g)).max() < 1e-4


@pytest.mark.parametrize("dim", [5, pytest.param(2, marks=pytest.mark.slow)])
def test_sliced_score_matching_reaches_sample_precision(dim):
    # SSM is an unbiased estimate of the exact objective (E[v v^T] = I), so its optimum is the
    # sample precision too; what remains is SGD noise, reduced by 4 projections and a cosine
    # learning-rate decay. Measured over seeds 0-2: max relative error 0.0018 (5-D, M=4),
    # <= 0.0037 (2-D and 5-D, M=1). Tolerance 0.02 (> 5x the worst); a wrong Hessian term
    # (factor 2) would give an error of order 1.
    data = gaussian_data(dim, 1000)
    steps = 1500
    lr = optax.cosine_decay_schedule(3e-2, steps, alpha=0.01)
    mu, P, _ = fit(SlicedScoreMatching(num_projections=4), data, steps, lr)
    m, S = sample_moments(data)
    assert rel_err(P, np.linalg.inv(S)) < 0.02
    np.testing.assert_allclose(mu, m, atol=1e-3)


@pytest.mark.parametrize(
    "dim, sigma",
    [
        (2, (0.3, 1.0)),
        pytest.param(5, 0.5, marks=pytest.mark.slow),
        pytest.param(2, 0.5, marks=pytest.mark.slow),
    ],
)
def test_denoising_score_matching_reaches_smoothed_precision(dim, sigma):
    # The expected DSM loss is minimized by the precision of the smoothed data, (S + s2 I)^-1,
    # with s2 = sigma^2 for one sigma and sum(sigma^4) / sum(sigma^2) for a sigma^2-weighted
    # mixture of noise levels. Measured over seeds 0-2: max relative error <= 0.0055 and mean
    # error <= 0.012 (noise draws). Tolerances 0.03 and 0.05 (5x and 4x the worst); using
    # sigma^2 instead of the mixture's s2 would be off by ~40%.
    data = gaussian_data(dim, 1000)
    steps = 1500
    lr = optax.cosine_decay_schedule(3e-2, steps, alpha=0.01)
    mu, P, _ = fit(DenoisingScoreMatching(sigma), data, steps, lr)
    m, S = sample_moments(data)
    sigmas = np.atleast_1d(np.asarray(sigma, np.float64))
    s2 = (sigmas**4).sum() / (sigmas**2).sum()
    assert rel_err(P, np.linalg.inv(S + s2 * np.eye(dim))) < 0.03
    np.testing.assert_allclose(mu, m, atol=0.05)


# --------------------------------------------------------------------------------------------
# Gradients: hand-derived closed forms on a 1-D Gaussian energy E = 0.5 exp(a) (x - mu)^2
# --------------------------------------------------------------------------------------------

SCALAR_DATA = jnp.asarray(np.random.default_rng(1).normal(0.7, 1.3, size=64), jnp.float32)
SCALAR_PARAMS = {"mu": jnp.asarray(0.3), "a": jnp.asarray(-0.2)}


def hand_score_matching(params, x):
    """J = mean[0.5 p^2 (x - mu)^2 - p], p = exp(a); and its gradient in (mu, a)."""
    p, d = jnp.exp(params["a"]), x - params["mu"]
    value = jnp.mean(0.5 * p**2 * d**2 - p)
    grad = {"mu": -(p**2) * jnp.mean(d), "a": p**2 * jnp.mean(d**2) - p}
    return value, grad


def assert_tree_close(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


@pytest.mark.parametrize(
    "loss",
    [
        ScoreMatching(),
        ScoreMatching(chunk_size=1),
        # In 1-D a Rademacher projection is v = +-1: v H v = H and (v g)^2 = g^2 exactly.
        SlicedScoreMatching(num_projections=3),
        SlicedScoreMatching(variance_reduced=False),
    ],
    ids=["sm", "sm-chunked", "ssm-vr", "ssm"],
)
def test_gradient_matches_hand_derived_score_matching(loss):
    f = jax.jit(jax.value_and_grad(lambda p: loss_of(loss, p, SCALAR_DATA)))
    value, grad = f(SCALAR_PARAMS)
    hand_value, hand_grad = hand_score_matching(SCALAR_PARAMS, SCALAR_DATA)
    np.testing.assert_allclose(value, hand_value, rtol=1e-5)
    assert_tree_close(grad, hand_grad)


@pytest.mark.parametrize("variance_reduced", [True, False])
def test_sliced_loss_with_given_projections_matches_hand_derived(variance_reduced):
    x = SCALAR_DATA[:, None]  # (N, D=1), flattened events
    v = jax.random.normal(jax.random.key(2), (5,) + x.shape)

    def ours(params):
        energy = lambda z: 0.5 * jnp.exp(params["a"]) * (z[..., 0] - params["mu"]) ** 2
        return sliced_score_matching_loss(energy, x, v, variance_reduced=variance_reduced)

    # J = mean_n[s_n 0.5 p^2 d_n^2 - p w_n], w_n = mean_m v_nm^2, s_n = 1 (VR) or w_n, p = e^a
    p, d = jnp.exp(SCALAR_PARAMS["a"]), x[:, 0] - SCALAR_PARAMS["mu"]
    w = (v[..., 0] ** 2).mean(0)
    s = 1.0 if variance_reduced else w
    value = jnp.mean(s * 0.5 * p**2 * d**2 - p * w)
    grad = {"mu": -(p**2) * jnp.mean(s * d), "a": jnp.mean(s * p**2 * d**2 - p * w)}
    ours_value, ours_grad = jax.jit(jax.value_and_grad(ours))(SCALAR_PARAMS)
    np.testing.assert_allclose(ours_value, value, rtol=1e-5)
    assert_tree_close(ours_grad, grad, rtol=1e-5)


def test_denoising_loss_with_given_noise_matches_hand_derived():
    x = SCALAR_DATA[:, None]
    eps = jax.random.normal(jax.random.key(3), x.shape)
    sigma = jnp.where(jnp.arange(x.shape[0]) % 2 == 0, 0.3, 1.1)  # one sigma per example

    def ours(params):
        energy = lambda z: 0.5 * jnp.exp(params["a"]) * (z[..., 0] - params["mu"]) ** 2
        return denoising_score_matching_loss(energy, x, eps, sigma)

    # r = sigma^2 * (-E'(x~) + (x~ - x) / sigma^2) / sigma = eps - sigma p (d + sigma eps)
    p, d, e = jnp.exp(SCALAR_PARAMS["a"]), x[:, 0] - SCALAR_PARAMS["mu"], eps[:, 0]
    x_noised = x[:, 0] + sigma * e
    r = -p * (x_noised - SCALAR_PARAMS["mu"]) + (x_noised - x[:, 0]) / sigma**2
    value = jnp.mean(sigma**2 * 0.5 * r**2)
    grad = {
        "mu": jnp.mean(sigma**2 * r * p),
        "a": jnp.mean(sigma**2 * r * (-p * (d + sigma * e))),
    }
    ours_value, ours_grad = jax.jit(jax.value_and_grad(ours))(SCALAR_PARAMS)
    np.testing.assert_allclose(ours_value, value, rtol=1e-5)
    assert_tree_close(ours_grad, grad, rtol=1e-4)


@pytest.mark.parametrize(
    "loss",
    [
        SlicedScoreMatching(num_projections=2, projection="gaussian", variance_reduced=False),
        DenoisingScoreMatching((0.2, 0.5, 1.0)),
    ],
    ids=["ssm-gauss", "dsm-multi"],
)
def test_gradient_matches_finite_differences(loss):
    # With a fixed key the loss is a deterministic, smooth function of the parameters.
    with jax.enable_x64(True):
        data = jnp.asarray(np.random.default_rng(4).normal(size=(32, 2)))
        L = jnp.asarray([[1.2, 0.0], [0.4, 0.8]])
        params = {"mu": jnp.asarray([0.1, -0.2]), "L": L}
        flat, unravel = ravel_pytree(params)
        f = lambda z: loss.loss(jax.random.key(7), unravel(z), gaussian_model, no_guide, data)
        check_grads_along_each_coordinate(f, flat, rtol=1e-6, atol=1e-8)


# --------------------------------------------------------------------------------------------
# The Hessian trace, events beyond 1-D, several sites, the sliced estimate's bias
# --------------------------------------------------------------------------------------------


def quartic_energy(x):  # non-quadratic, couples coordinates: (*batch, 4) -> (*batch,)
    W = jnp.asarray(np.random.default_rng(5).normal(size=(4, 4)), x.dtype)
    return jnp.sum(jnp.log(jnp.cosh(x @ W)), -1) + 0.1 * jnp.sum(x**2, -1) ** 2


@jax.jit
def _hessian_trace_check(x):
    hess = jax.vmap(jax.hessian(quartic_energy))(x)
    grad = jax.vmap(jax.grad(quartic_energy))(x)
    expected = jnp.mean(0.5 * jnp.sum(grad**2, -1) - jnp.trace(hess, axis1=-2, axis2=-1))
    ours = [score_matching_loss(quartic_energy, x, chunk_size=c) for c in (None, 1, 3)]
    return expected, jnp.stack(ours)


def test_hessian_trace_matches_full_hessian():
    expected, ours = _hessian_trace_check(jax.random.normal(jax.random.key(6), (16, 4)))
    np.testing.assert_allclose(ours, expected, rtol=1e-5)


def test_matrix_events_are_flattened():
    x = jax.random.normal(jax.random.key(8), (10, 2, 2))

    def model(energy, event_shape, data):
        with numpyro.plate("data", data.shape[0]):
            numpyro.sample("x", Unnormalized(energy, event_shape), obs=data)

    matrix = lambda d: model(lambda z: quartic_energy(z.reshape(z.shape[:-2] + (4,))), (2, 2), d)
    flat = lambda d: model(quartic_energy, (4,), d)
    losses = (ScoreMatching(), SlicedScoreMatching(2), DenoisingScoreMatching(0.3))
    key = jax.random.key(0)

    @jax.jit
    def both(x):
        as_matrix = [loss.loss(key, {}, matrix, no_guide, x) for loss in losses]
        as_flat = [loss.loss(key, {}, flat, no_guide, x.reshape(10, 4)) for loss in losses]
        return jnp.stack(as_matrix), jnp.stack(as_flat)

    as_matrix, as_flat = both(x)
    np.testing.assert_allclose(as_matrix, as_flat, rtol=1e-6)


def test_several_sites_add_their_losses():
    x1 = jax.random.normal(jax.random.key(9), (12, 2))
    x2 = jax.random.normal(jax.random.key(10), (7, 2)) + 1.0
    E = gaussian_energy(jnp.zeros(2), jnp.asarray([[2.0, 0.3], [0.3, 1.0]]))

    def site(name, data):
        with numpyro.plate(f"plate_{name}", data.shape[0]):
            numpyro.sample(name, Unnormalized(E, (2,)), obs=data)

    def both(a, b):
        site("a", a)
        site("b", b)

    sm, key = ScoreMatching(), jax.random.key(0)

    @jax.jit
    def losses(x1, x2):
        together = sm.loss(key, {}, both, no_guide, x1, x2)
        apart = sm.loss(key, {}, site, no_guide, "a", x1) + sm.loss(
            key, {}, site, no_guide, "b", x2
        )
        return together, apart

    together, apart = losses(x1, x2)
    np.testing.assert_allclose(together, apart, rtol=1e-6)


def test_conditional_energy_sees_its_inputs_per_example():
    # E(y | x) = 0.5 p (y - w x)^2 closes over the batch of inputs x (another observed site):
    # the loss is mean[0.5 p^2 (y - w x)^2 - p], each y paired with its own x.
    x = jax.random.normal(jax.random.key(13), (40,))
    y = 0.8 * x + 0.3 * jax.random.normal(jax.random.key(14), (40,))
    p, w = 2.0, 0.5

    def model(x, y):
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("x", numpyro.distributions.Normal(), obs=x)
            numpyro.sample("y", Unnormalized(lambda v: 0.5 * p * (v - w * x) ** 2, ()), obs=y)

    @jax.jit
    def losses(x, y):
        key = jax.random.key(0)
        return [
            loss.loss(key, {}, model, no_guide, x, y)
            for loss in (ScoreMatching(), SlicedScoreMatching())
        ]

    expected = jnp.mean(0.5 * p**2 * (y - w * x) ** 2 - p)
    np.testing.assert_allclose(losses(x, y), [expected, expected], rtol=1e-5)


def test_sites_argument_selects_and_checks_sites():
    x1 = jax.random.normal(jax.random.key(9), (12, 2))
    x2 = jax.random.normal(jax.random.key(10), (7, 2)) + 1.0
    labels = jnp.arange(5) % 3
    E = gaussian_energy(jnp.zeros(2), jnp.asarray([[2.0, 0.3], [0.3, 1.0]]))

    def site(name, data):
        with numpyro.plate(f"plate_{name}", data.shape[0]):
            numpyro.sample(name, Unnormalized(E, (2,)), obs=data)

    def model(a, b, y):
        site("a", a)
        site("b", b)
        with numpyro.plate("labels", y.shape[0]):
            numpyro.sample("y", label_ebm(jnp.zeros((y.shape[0], 3))), obs=y)

    key = jax.random.key(0)
    only_a = ScoreMatching(sites=["a"]).loss(key, {}, model, no_guide, x1, x2, labels)
    alone = ScoreMatching().loss(key, {}, site, no_guide, "a", x1)
    np.testing.assert_allclose(only_a, alone, rtol=1e-6)
    # default: every continuous site (the label site is left alone)
    both = ScoreMatching().loss(key, {}, model, no_guide, x1, x2, labels)
    b_alone = ScoreMatching().loss(key, {}, site, no_guide, "b", x2)
    np.testing.assert_allclose(both, alone + b_alone, rtol=1e-6)
    with pytest.raises(ValueError, match="`sites`.*names \\['y'\\].*ConditionalMaximumLikelihood"):
        DenoisingScoreMatching(0.1, sites=["y"]).loss(key, {}, model, no_guide, x1, x2, labels)
    with pytest.raises(ValueError, match="`sites`.*not observed"):
        SlicedScoreMatching(sites="c").loss(key, {}, model, no_guide, x1, x2, labels)
    with pytest.raises(TypeError, match="`sites`"):
        ScoreMatching(sites=3)

    def labels_only(y):
        with numpyro.plate("labels", y.shape[0]):
            numpyro.sample("y", label_ebm(jnp.zeros((y.shape[0], 3))), obs=y)

    with pytest.raises(ValueError, match="continuous support"):
        ScoreMatching().loss(key, {}, labels_only, no_guide, labels)


SSM_VARIANTS = [(p, vr) for p in ("rademacher", "gaussian") for vr in (True, False)]


@pytest.fixture(scope="module")
def sliced_losses_over_keys():
    """The sliced loss at 2000 keys for every variant, and the exact loss (one compilation)."""
    data = gaussian_data(3, 20)
    L = np.linalg.cholesky([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.7]])
    params = {"mu": jnp.asarray([0.5, 0.0, -0.5]), "L": jnp.asarray(L, jnp.float32)}
    keys = jax.random.split(jax.random.key(11), 2000)

    # lax.map over keys, keys as an argument: vmapping the loss over 2000 keys compiles for
    # ~70 s on 2 cores (XLA), the sequential map in ~2 s and runs in well under a second.
    @jax.jit
    def run(params, keys):
        def over_keys(ssm, p=params, ks=keys):
            return jax.lax.map(lambda k: ssm.loss(k, p, gaussian_model, no_guide, data), ks)

        sliced = {v: over_keys(SlicedScoreMatching(1, *v)) for v in SSM_VARIANTS}
        exact = ScoreMatching().loss(keys[0], params, gaussian_model, no_guide, data)
        # a diagonal Hessian, P = 2.25 I: Rademacher v^T H v = tr H exactly
        diagonal = {"mu": params["mu"], "L": 1.5 * jnp.eye(3)}
        spread = {
            p: over_keys(SlicedScoreMatching(1, p), diagonal, keys[:500]).std()
            for p in ("rademacher", "gaussian")
        }
        return sliced, exact, spread

    return run(params, keys)


@pytest.mark.parametrize("variant", SSM_VARIANTS, ids=lambda v: str(v))
def test_sliced_estimate_is_unbiased(sliced_losses_over_keys, variant):
    # Mean of the sliced loss over K keys vs the exact loss: within 4 standard errors.
    sliced, exact, _ = sliced_losses_over_keys
    losses = np.asarray(sliced[variant], np.float64)
    se = losses.std() / np.sqrt(losses.size)
    assert se > 0  # the estimate is random (a biased test would be meaningless otherwise)
    assert abs(losses.mean() - exact) < 4 * se


def test_rademacher_projections_are_exact_for_a_diagonal_hessian(sliced_losses_over_keys):
    # Rademacher: v^T H v = tr H when H is diagonal; Gaussian: variance 2 ||H||_F^2 > 0.
    spread = sliced_losses_over_keys[2]
    assert spread["rademacher"] < 1e-5 < spread["gaussian"]


# --------------------------------------------------------------------------------------------
# Through SVI: jit, subsampled plates
# --------------------------------------------------------------------------------------------

FULL = gaussian_data(2, 2000, seed=3)


def subsampled_model(data):
    mu = numpyro.param("mu", jnp.zeros(2))
    L = numpyro.param("L", jnp.eye(2), constraint=constraints.lower_cholesky)
    with numpyro.plate("data", data.shape[0], subsample_size=128):
        batch = numpyro.subsample(data, event_dim=1)
        numpyro.sample("x", Unnormalized(gaussian_energy(mu, L @ L.T), (2,)), obs=batch)


def test_jitted_loss_with_subsampled_plate():
    params = {"mu": jnp.asarray([0.1, 0.2]), "L": jnp.eye(2)}
    loss = ScoreMatching()
    k1, k2 = jax.random.key(1), jax.random.key(2)
    eager = loss.loss(k1, params, subsampled_model, no_guide, FULL)

    @jax.jit
    def check(params):
        batch = lambda k: loss.loss(k, params, subsampled_model, no_guide, FULL)
        full = loss.loss(k1, params, gaussian_model, no_guide, FULL)
        batches = jax.lax.map(batch, jax.random.split(k1, 200))  # vmap: XLA compiles it slowly
        return batch(k1), batch(k2), jnp.mean(batches), full

    at_k1, at_k2, mean_of_batches, full = check(params)
    np.testing.assert_allclose(at_k1, eager, rtol=1e-5)
    # the key picks the minibatch: the (otherwise deterministic) loss changes with it, and the
    # minibatch losses average to the full-data loss (sd of 200 batch means ~1%)
    assert abs(float(at_k1) - float(at_k2)) > 1e-3
    np.testing.assert_allclose(mean_of_batches, full, rtol=0.05)


@pytest.mark.parametrize(
    "loss, mean_atol",
    [
        (ScoreMatching(), 0.05),
        pytest.param(SlicedScoreMatching(2), 0.05, marks=pytest.mark.slow),
        # DSM's own noise (sigma = 0.5) moves the final mean: over seeds 0-5 the largest
        # coordinate error was 0.017-0.053 (per-coordinate sd ~0.03), so 4 sd.
        pytest.param(DenoisingScoreMatching(0.5), 0.12, marks=pytest.mark.slow),
    ],
    ids=["sm", "ssm", "dsm"],
)
def test_svi_with_minibatches_learns_the_precision(loss, mean_atol):
    # 600 steps of minibatches of 128 from 2000 points; minibatch noise with the lr decayed to
    # 1e-4: within 5% of the full-data optimum (measured <= 1.5%).
    steps = 600
    lr = optax.cosine_decay_schedule(3e-2, steps, alpha=0.003)
    mu, P, result = fit(loss, FULL, steps, lr, model=subsampled_model)
    m, S = sample_moments(FULL)
    sigma2 = loss.sigmas[0] ** 2 if isinstance(loss, DenoisingScoreMatching) else 0.0
    assert np.all(np.isfinite(result.losses))
    assert rel_err(P, np.linalg.inv(S + sigma2 * np.eye(2))) < 0.05
    np.testing.assert_allclose(mu, m, atol=mean_atol)


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: SlicedScoreMatching(num_projections=0), ValueError, "num_projections"),
        (lambda: SlicedScoreMatching(num_projections=1.5), TypeError, "num_projections"),
        (lambda: SlicedScoreMatching(projection="sobol"), ValueError, "projection"),
        (lambda: SlicedScoreMatching(variance_reduced="yes"), TypeError, "variance_reduced"),
        (lambda: DenoisingScoreMatching(0.0), ValueError, "sigma"),
        (lambda: DenoisingScoreMatching(-1.0), ValueError, "sigma"),
        (lambda: DenoisingScoreMatching((0.1, float("nan"))), ValueError, "sigma"),
        (lambda: DenoisingScoreMatching(()), ValueError, "sigma"),
        (lambda: DenoisingScoreMatching("big"), TypeError, "sigma"),
        (lambda: ScoreMatching(chunk_size=0), ValueError, "chunk_size"),
    ],
)
def test_bad_options(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_model_without_unnormalized_site():
    def model(data):
        with numpyro.plate("data", data.shape[0]):
            numpyro.sample("x", numpyro.distributions.Normal(), obs=data)

    with pytest.raises(ValueError, match="no observed numpyro_ebm.Unnormalized site"):
        loss_of(ScoreMatching(), {}, SCALAR_DATA, model)


def test_data_with_nan():
    with pytest.raises(ValueError, match="non-finite"):
        # checked on concrete data (eagerly); under jit the data is a tracer
        DenoisingScoreMatching(0.1).loss(
            jax.random.key(0), SCALAR_PARAMS, scalar_model, no_guide, SCALAR_DATA.at[3].set(jnp.nan)
        )


def test_integer_data():
    with pytest.raises(ValueError, match="floating"):
        loss_of(ScoreMatching(), SCALAR_PARAMS, jnp.arange(5))
