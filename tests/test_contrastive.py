"""ContrastiveDivergence and PersistentContrastiveDivergence as SVI losses: closed-form recovery
of a Gaussian energy, the hand-derived gradient, and the chain state that PCD keeps."""

from functools import partial
from typing import NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from blackjax.base import SamplingAlgorithm
from numpyro.infer import SVI

import numpyro_ebm
from numpyro_ebm.estimators import (
    PCD_STATE,
    ContrastiveDivergence,
    PersistentContrastiveDivergence,
    contrastive_divergence_loss,
    no_guide,
)

# ------------------------------------------------------------------------------------------
# a Gaussian energy 0.5 (x - mu)^T P (x - mu), P = L L^T with L lower triangular


def gaussian_data(dim, n=2000, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(dim, dim))
    cov = a @ a.T / dim + 0.5 * np.eye(dim)
    x = rng.multivariate_normal(rng.normal(size=dim), cov, size=n).astype(np.float32)
    mean = x.mean(0)
    precision = np.linalg.inv(np.cov(x.T, bias=True))
    return x, mean, precision


def gaussian_model(dim, subsample_size=256):
    def model(data):
        mu = numpyro.param("mu", jnp.zeros(dim))
        L = jnp.tril(numpyro.param("L", jnp.eye(dim)))

        def energy(x):
            z = (x - mu) @ L
            return 0.5 * jnp.sum(z**2, -1)

        with numpyro.plate("data", data.shape[0], subsample_size=subsample_size):
            batch = numpyro.subsample(data, event_dim=1)
            numpyro.sample("x", numpyro_ebm.Unnormalized(energy, (dim,)), obs=batch)

    return model


def precision_of(params):
    L = np.tril(np.asarray(params["L"]))
    return L @ L.T


def rel_err(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def fit(loss, guide, data, dim, num_steps, lr=3e-2, seed=0):
    model = gaussian_model(dim)
    if guide == "pcd":
        guide = loss.guide
    optim = optax.adam(optax.cosine_decay_schedule(lr, num_steps, 0.01))
    svi = SVI(model, guide, optim, loss=loss)
    return svi.run(jax.random.key(seed), num_steps, data, progress_bar=False)


# ------------------------------------------------------------------------------------------
# recovery of mu and P (the sample mean and the sample precision)


def test_cd_mala_recovers_gaussian_2d():
    x, mean, precision = gaussian_data(2)
    cd = ContrastiveDivergence(partial(blackjax.mala, step_size=0.05), num_steps=5)
    result = fit(cd, no_guide, x, 2, 1500)
    assert np.all(np.isfinite(np.asarray(result.losses)))
    # a few percent: the negatives' Monte Carlo noise at the final (decayed) learning rate
    assert rel_err(precision_of(result.params), precision) < 0.03
    np.testing.assert_allclose(result.params["mu"], mean, atol=0.03)


def test_pcd_ula_recovers_ula_biased_precision_2d():
    """ULA with step h on a Gaussian of precision P is stationary at precision P - h P^2 / 2,
    so PCD+ULA converges to the P that solves P - h P^2 / 2 = sample precision."""
    x, mean, precision = gaussian_data(2)
    h = 0.02
    pcd = PersistentContrastiveDivergence(
        partial(numpyro_ebm.ula, step_size=h),
        num_steps=20,
        num_chains=512,
        reinit_prob=0.0,
        init_dist=dist.Normal(0.0, 2.0).expand([2]).to_event(1),
    )
    result = fit(pcd, "pcd", x, 2, 1500)
    P = precision_of(result.params)
    assert rel_err(P - h * P @ P / 2, precision) < 0.03
    # the bias is real and of the predicted size: h P^2 / 2 is ~2% of P here
    assert rel_err(P, precision) > rel_err(P - h * P @ P / 2, precision)
    np.testing.assert_allclose(result.params["mu"], mean, atol=0.05)


# 16 s; test_pcd_ula_recovers_ula_biased_precision_2d recovers a precision with PCD
@pytest.mark.slow
def test_pcd_mala_buffer_recovers_gaussian_2d():
    x, mean, precision = gaussian_data(2, seed=1)
    pcd = PersistentContrastiveDivergence(
        partial(blackjax.mala, step_size=0.1),
        num_steps=10,
        num_chains=512,
        buffer_size=2048,
        reinit_prob=0.0,
        init_dist=dist.Normal(0.0, 2.0).expand([2]).to_event(1),
    )
    result = fit(pcd, "pcd", x, 2, 1500)
    assert rel_err(precision_of(result.params), precision) < 0.04
    np.testing.assert_allclose(result.params["mu"], mean, atol=0.05)


def test_pcd_kernel_none_runs_the_sites_own_sampler():
    """kernel=None: the chains run the site distribution's own sampler, here the kernel of a
    geometric path (MALA) that the Unnormalized site carries; PCD then reaches the sample
    precision within the Monte Carlo error of the MALA-buffer test above."""
    x, mean, precision = gaussian_data(2, seed=1)
    mala = partial(blackjax.mala, step_size=0.1)
    base = dist.Normal(0.0, 3.0).expand([2]).to_event(1)

    def model(data):
        mu = numpyro.param("mu", jnp.zeros(2))
        L = jnp.tril(numpyro.param("L", jnp.eye(2)))

        def energy(v):
            return 0.5 * jnp.sum(((v - mu) @ L) ** 2, -1)

        path = numpyro_ebm.geometric_path(lambda v: -energy(v), base, mala)
        with numpyro.plate("data", data.shape[0], subsample_size=256):
            batch = numpyro.subsample(data, event_dim=1)
            ebm = numpyro_ebm.Unnormalized(energy, (2,), annealing_path=path)
            numpyro.sample("x", ebm, obs=batch)

    pcd = PersistentContrastiveDivergence(
        None,
        num_steps=10,
        num_chains=512,
        buffer_size=2048,
        reinit_prob=0.0,
        init_dist=dist.Normal(0.0, 2.0).expand([2]).to_event(1),
    )
    optim = optax.adam(optax.cosine_decay_schedule(3e-2, 1500, 0.01))
    result = SVI(model, pcd.guide, optim, loss=pcd).run(
        jax.random.key(0), 1500, x, progress_bar=False
    )
    assert rel_err(precision_of(result.params), precision) < 0.04
    np.testing.assert_allclose(result.params["mu"], mean, atol=0.05)
    # a site without a sampler of its own: kernel=None is refused, naming the argument
    with pytest.raises(ValueError, match="`kernel` is None.*no sampler of its own"):
        pcd.loss(jax.random.key(0), {**result.params, **result.state.mutable_state},
                 gaussian_model(2), pcd.guide, x)


@pytest.mark.slow
def test_cd_and_pcd_recover_gaussian_5d():
    x, mean, precision = gaussian_data(5, seed=2)
    cd = ContrastiveDivergence(partial(blackjax.mala, step_size=0.05), num_steps=5)
    result = fit(cd, no_guide, x, 5, 3000)
    assert rel_err(precision_of(result.params), precision) < 0.04
    np.testing.assert_allclose(result.params["mu"], mean, atol=0.05)
    pcd = PersistentContrastiveDivergence(
        partial(blackjax.mala, step_size=0.1),
        num_steps=10,
        num_chains=1024,
        reinit_prob=0.0,
        init_dist=dist.Normal(0.0, 2.0).expand([5]).to_event(1),
    )
    result = fit(pcd, "pcd", x, 5, 3000)
    assert rel_err(precision_of(result.params), precision) < 0.04
    np.testing.assert_allclose(result.params["mu"], mean, atol=0.05)


# ------------------------------------------------------------------------------------------
# the gradient equals the hand-derived one; none flows through the sampler


class State(NamedTuple):
    position: jax.Array


def descent_kernel(logdensity_fn, h=0.3):
    """A deterministic 'sampler': x <- x + h grad log p(x). It depends on the parameters through
    logdensity_fn, so any gradient leaking through it would change d loss / d mu."""

    def init(position, rng_key=None):
        return State(position)

    def step(rng_key, state):
        x = state.position
        return State(x + h * jax.grad(logdensity_fn)(x)), None

    return SamplingAlgorithm(init, step)


def tiny_model(data):
    mu = numpyro.param("mu", jnp.zeros(2))
    P = numpyro.param("P", jnp.array([[2.0, 0.3], [0.3, 1.0]]))
    numpyro.sample(
        "x",
        numpyro_ebm.Unnormalized(
            lambda x: 0.5 * jnp.einsum("...i,ij,...j->...", x - mu, P, x - mu), (2,)
        ),
        obs=data,
    )


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_cd_gradient_is_hand_derived(alpha):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(7, 2)), jnp.float32)
    params = {"mu": jnp.array([0.2, -0.1]), "P": jnp.array([[2.0, 0.3], [0.3, 1.0]])}
    k, h = 3, 0.3
    cd = ContrastiveDivergence(descent_kernel, num_steps=k, alpha=alpha)
    grads = jax.grad(lambda p: cd.loss(jax.random.key(0), p, tiny_model, no_guide, x))(params)

    mu, P = params["mu"], params["P"]
    x_neg = x
    for _ in range(k):  # the negatives, computed by hand: x <- x - h P (x - mu)
        x_neg = x_neg - h * (x_neg - mu) @ P
    E = lambda z: 0.5 * jnp.einsum("...i,ij,...j->...", z - mu, P, z - mu)
    w_pos = 1.0 + 2.0 * alpha * E(x)  # d/dE of (E + alpha E^2), per example
    w_neg = -1.0 + 2.0 * alpha * E(x_neg)
    # dE/dmu = -P (x - mu);  dE/dP = 0.5 (x - mu)(x - mu)^T
    g_mu = (
        -(jnp.mean(w_pos[:, None] * (x - mu), 0) + jnp.mean(w_neg[:, None] * (x_neg - mu), 0)) @ P
    )
    outer = lambda z, w: (
        0.5 * jnp.mean(w[:, None, None] * jnp.einsum("ni,nj->nij", z - mu, z - mu), 0)
    )
    g_P = outer(x, w_pos) + outer(x_neg, w_neg)
    np.testing.assert_allclose(grads["mu"], g_mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads["P"], g_P, rtol=1e-5, atol=1e-6)


def test_contrastive_divergence_loss_function():
    e_pos, e_neg = jnp.array([1.0, 3.0]), jnp.array([0.0, -2.0, 5.0])
    assert contrastive_divergence_loss(e_pos, e_neg) == pytest.approx(2.0 - 1.0)
    assert contrastive_divergence_loss(e_pos, e_neg, 0.1) == pytest.approx(
        1.0 + 0.1 * (5.0 + 29 / 3)
    )


def test_cd_sums_over_several_sites():
    x = jnp.ones((4, 2))
    y = jnp.zeros((4, 3))

    def model(x, y):
        a = numpyro.param("a", 1.0)
        b = numpyro.param("b", 2.0)
        numpyro.sample("x", numpyro_ebm.Unnormalized(lambda v: a * jnp.sum(v**2, -1), (2,)), obs=x)
        numpyro.sample("y", numpyro_ebm.Unnormalized(lambda v: b * jnp.sum(v**2, -1), (3,)), obs=y)

    def identity(logdensity_fn):
        return SamplingAlgorithm(
            lambda x, rng_key=None: State(x), lambda key, s: (State(s.position + 1.0), None)
        )

    cd = ContrastiveDivergence(identity, num_steps=1)
    params = {"a": jnp.array(1.0), "b": jnp.array(2.0)}
    value = cd.loss(jax.random.key(0), params, model, no_guide, x, y)
    # x: E = a*2 at data, a*8 at x+1; y: E = 0 at data, b*3 at y+1
    assert value == pytest.approx((2.0 - 8.0) + (0.0 - 6.0))


# ------------------------------------------------------------------------------------------
# PCD's chain state: declared by the guide, carried by SVI, updated each step


def _pcd(**kw):
    kw.setdefault("init_dist", dist.Uniform(-4.0, 4.0).expand([2]).to_event(1))
    return PersistentContrastiveDivergence(partial(numpyro_ebm.ula, step_size=1e-2), **kw)


def test_pcd_state_lives_in_svi_state():
    x, _, _ = gaussian_data(2, n=512)
    pcd = _pcd(num_steps=2, num_chains=64, buffer_size=256, reinit_prob=0.0)
    svi = SVI(gaussian_model(2, 64), pcd.guide, optax.adam(1e-2), loss=pcd)
    state = svi.init(jax.random.key(0), x)
    buffer0 = np.asarray(state.mutable_state[PCD_STATE]["*"]["positions"])
    assert buffer0.shape == (256, 2)
    assert np.all(np.abs(buffer0) <= 4.0)
    update = jax.jit(svi.update)
    state, loss = update(state, x)
    buffer1 = np.asarray(state.mutable_state[PCD_STATE]["*"]["positions"])
    changed = np.any(buffer1 != buffer0, axis=1)
    assert changed.sum() == 64  # exactly num_chains rows were drawn, moved and written back
    state, _ = update(state, x)
    buffer2 = np.asarray(state.mutable_state[PCD_STATE]["*"]["positions"])
    assert not np.array_equal(buffer2, buffer1)
    assert np.isfinite(float(loss))


def test_pcd_reinitializes_nonfinite_and_a_fraction_of_chains():
    x, _, _ = gaussian_data(2, n=512)
    pcd = _pcd(num_steps=1, num_chains=1000, reinit_prob=0.2)
    svi = SVI(gaussian_model(2, 64), pcd.guide, optax.adam(1e-2), loss=pcd)
    state = svi.init(jax.random.key(0), x)
    chains = jnp.full((1000, 2), 100.0).at[:10].set(jnp.nan)  # far outside the uniform box
    state = state._replace(mutable_state={PCD_STATE: {"*": {"positions": chains}}})
    state, _ = jax.jit(svi.update)(state, x)
    new = np.asarray(state.mutable_state[PCD_STATE]["*"]["positions"])
    assert np.all(np.isfinite(new))
    restarted = np.all(np.abs(new) < 10.0, axis=1)  # from Uniform(-4, 4), then one small step
    assert restarted[:10].all()
    # binomial(990, 0.2): mean 198, sd 12.6
    assert abs(restarted[10:].sum() - 198) < 4 * 12.6
    # reinit_prob=0: the fresh starts are drawn (in a `lax.cond`) for the non-finite chains only
    pcd = _pcd(num_steps=1, num_chains=1000, reinit_prob=0.0)
    svi = SVI(gaussian_model(2, 64), pcd.guide, optax.adam(1e-2), loss=pcd)
    state = svi.init(jax.random.key(0), x)._replace(
        mutable_state={PCD_STATE: {"*": {"positions": chains}}})
    new = np.asarray(jax.jit(svi.update)(state, x)[0].mutable_state[PCD_STATE]["*"]["positions"])
    restarted = np.all(np.abs(new) < 10.0, axis=1)
    assert np.all(np.isfinite(new)) and restarted[:10].all() and not restarted[10:].any()


def test_pcd_restarted_then_diverged_chain_gets_a_draw_of_its_own():
    """A chain that restarts (reinit_prob = 1) and then diverges is replaced by a second fresh
    draw, not by the start it diverged from (both draws once used one key)."""

    def kernel(diverge):
        def factory(logdensity_fn):
            def step(key, s):
                return State(s.position + (jnp.nan if diverge else 0.0)), None

            return SamplingAlgorithm(lambda x, rng_key=None: State(x), step)

        return factory

    x, _, _ = gaussian_data(2, n=512)
    positions = {}
    for diverge in (False, True):
        pcd = PersistentContrastiveDivergence(
            kernel(diverge), num_steps=1, num_chains=64, reinit_prob=1.0,
            init_dist=dist.Uniform(-4.0, 4.0).expand([2]).to_event(1),
        )
        svi = SVI(gaussian_model(2, 64), pcd.guide, optax.adam(1e-2), loss=pcd)
        state = svi.init(jax.random.key(0), x)
        state, _ = jax.jit(svi.update)(state, x)
        positions[diverge] = np.asarray(state.mutable_state[PCD_STATE]["*"]["positions"])
    starts, replaced = positions[False], positions[True]  # the identity kernel keeps its starts
    assert np.all(np.isfinite(replaced)) and np.all(np.abs(replaced) <= 4.0)
    assert not np.any(np.all(starts == replaced, axis=1))


def test_pcd_make_guide_without_init_dist():
    x, mean, _ = gaussian_data(2, n=1000)
    pcd = PersistentContrastiveDivergence(
        partial(numpyro_ebm.ula, step_size=1e-2), num_steps=2, num_chains=4096
    )
    model = gaussian_model(2, 256)
    svi = SVI(model, pcd.make_guide(model), optax.adam(1e-2), loss=pcd)
    state = svi.init(jax.random.key(0), x)
    site_state = state.mutable_state[PCD_STATE]["x"]
    chains = np.asarray(site_state["positions"])
    assert chains.shape == (4096, 2)
    # started from a Gaussian matched to the data the guide saw (a minibatch of 256)
    np.testing.assert_allclose(chains.mean(0), mean, atol=4 * float(x.std(0).max()) * (1 / 16 + 1 / 64))
    result = svi.run(jax.random.key(1), 5, x, progress_bar=False)
    assert np.all(np.isfinite(np.asarray(result.losses)))
