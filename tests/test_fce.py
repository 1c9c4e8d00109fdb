"""Flow contrastive estimation: Gaussian log Z in closed form, gradient reversal, errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from numpyro.infer import SVI

from numpyro_ebm.distribution import Unnormalized
from numpyro_ebm.estimators import (
    FlowContrastiveEstimation,
    FlowGuide,
    fce_equilibrium_loss,
    fce_optimizer,
    flow_guide,
    nce_loss,
    no_guide,
    reverse_gradient,
)
from numpyro_ebm.estimators import fce as fce_module

D = 2
MU = jnp.array([1.0, -0.5])
CHOL = jnp.array([[1.0, 0.0], [0.6, 0.5]])


def gaussian_data(n=4000, seed=0):
    return MU + jax.random.normal(jax.random.key(seed), (n, D)) @ CHOL.T


def gaussian_model(data, with_log_Z=True):
    """E(x) = 0.5 |(x - m) L|^2, P = L L^T; closed form log Z = D/2 log 2pi - 1/2 log det P."""
    m = numpyro.param("mu", jnp.zeros(D))
    chol = numpyro.param("P_chol", jnp.eye(D))
    log_Z = numpyro.param("log_Z", 0.0) if with_log_Z else None

    def energy(x):
        r = (x - m) @ jnp.tril(chol)
        return 0.5 * (r**2).sum(-1)

    with numpyro.plate("data", data.shape[0], subsample_size=256):
        batch = numpyro.subsample(data, event_dim=1)
        numpyro.sample("x", Unnormalized(energy, (D,), log_Z=log_Z), obs=batch)


def closed_form_log_Z(params):
    chol = jnp.tril(params["P_chol"])
    precision = chol @ chol.T
    return 0.5 * D * math.log(2 * math.pi) - 0.5 * jnp.linalg.slogdet(precision)[1]


@pytest.fixture(scope="module")
def trained():
    data = gaussian_data()
    guide = flow_guide(
        "x", D, rng_key=jax.random.key(1), flow="coupling-affine", flow_layers=2, nn_width=32,
        loc=data.mean(0), scale=data.std(0),
    )  # fmt: skip
    num_updates = 2000
    svi = SVI(
        gaussian_model,
        guide,
        fce_optimizer(guide, ebm_lr=5e-3, flow_lr=1e-3, num_updates=num_updates),
        loss=FlowContrastiveEstimation(num_noise=1, flow_mle_weight=0.1),
    )
    result = svi.run(jax.random.key(2), num_updates, data, progress_bar=False)
    return data, guide, result


def test_fce_learns_gaussian_log_Z(trained):
    data, _, result = trained
    params = result.params
    # Self-normalization: the learned log_Z matches the closed form of the learned precision.
    assert abs(float(params["log_Z"] - closed_form_log_Z(params))) < 0.1
    # ... and the energy itself is right: mean and precision near the sample ones.
    np.testing.assert_allclose(params["mu"], data.mean(0), atol=0.05)
    chol = jnp.tril(params["P_chol"])
    sample_precision = jnp.linalg.inv(jnp.cov(data.T))
    np.testing.assert_allclose(chol @ chol.T, sample_precision, rtol=0.1, atol=0.1)


def test_fce_both_models_have_a_test_log_likelihood(trained):
    data, guide, result = trained
    params = result.params
    test = gaussian_data(2000, seed=7)
    true_entropy = 0.5 * D * (1 + math.log(2 * math.pi)) + jnp.linalg.slogdet(CHOL)[1]
    # The EBM, self-normalized: -E(x) - log_Z.
    chol = jnp.tril(params["P_chol"])
    energy = 0.5 * (((test - params["mu"]) @ chol) ** 2).sum(-1)
    ebm_nll = float(jnp.mean(energy + params["log_Z"]))
    # The flow: exact log q.
    flow_nll = float(-jnp.mean(guide.log_prob(params, test)))
    # MC standard error of an NLL estimate over 2000 Gaussian points in 2-D: sqrt(1/2000) ~ 0.022.
    assert abs(ebm_nll - true_entropy) < 0.15
    assert abs(flow_nll - true_entropy) < 0.3
    # The game's NCE part sits near its equilibrium 2 log 2 (the loss adds 0.1 * flow NLL).
    nce_part = float(jnp.mean(result.losses[-200:])) - 0.1 * flow_nll
    assert abs(nce_part - fce_equilibrium_loss(1)) < 0.05


def _loss_and_grads(params, data, key):
    guide = flow_guide(
        "x", D, rng_key=jax.random.key(3), flow="coupling-affine", flow_layers=2, nn_width=16
    )
    loss = FlowContrastiveEstimation(num_noise=2, flow_mle_weight=0.0)

    def f(p):
        return loss.loss(key, p, gaussian_model, guide, data)

    return guide, jax.jit(jax.value_and_grad(f))(params)


def test_gradient_reversal_sign(monkeypatch):
    x = jnp.array([0.3, -1.2])
    g = jax.grad(lambda t: jnp.sum(jnp.sin(t) * 3.0))(x)
    np.testing.assert_allclose(
        jax.grad(lambda t: jnp.sum(jnp.sin(reverse_gradient(t)) * 3.0))(x), -g
    )

    data = gaussian_data(512)
    guide = flow_guide(
        "x", D, rng_key=jax.random.key(3), flow="coupling-affine", flow_layers=2, nn_width=16
    )
    params = {
        "mu": jnp.array([0.2, 0.1]),
        "P_chol": jnp.eye(D) * 1.3,
        "log_Z": jnp.array(0.4),
        guide.param_name: numpyro.handlers.trace(numpyro.handlers.seed(guide, 0)).get_trace()[
            guide.param_name
        ]["value"],
    }
    key = jax.random.key(5)
    _, (value, grads) = _loss_and_grads(params, data, key)
    monkeypatch.setattr(fce_module, "reverse_gradient", lambda tree: tree)
    _, (value_plain, grads_plain) = _loss_and_grads(params, data, key)
    assert float(value) == pytest.approx(float(value_plain), rel=1e-6)
    # EBM params: the same gradient of the NCE term.
    for name in ("mu", "P_chol", "log_Z"):
        np.testing.assert_allclose(grads[name], grads_plain[name], rtol=1e-5, atol=1e-6)
    # Flow params: exactly the negative (and not trivially zero: samples carry the gradient).
    flow_g = jax.tree.leaves(grads[guide.param_name])
    flow_g_plain = jax.tree.leaves(grads_plain[guide.param_name])
    assert sum(float(jnp.abs(a).sum()) for a in flow_g_plain) > 1e-3
    for a, b in zip(flow_g, flow_g_plain):
        np.testing.assert_allclose(a, -b, rtol=1e-5, atol=1e-7)


def test_nce_loss_equilibrium_value():
    for nu in (1, 3):
        logit = -math.log(nu) * jnp.ones((nu, 64))
        value = nce_loss(logit[0], logit, nu)
        assert float(value) == pytest.approx(fce_equilibrium_loss(nu), rel=1e-5)
    assert fce_equilibrium_loss(1) == pytest.approx(2 * math.log(2))


def _run_once(model, guide, loss, data):
    svi = SVI(model, guide, fce_optimizer(["x_flow"]), loss=loss)
    state = svi.init(jax.random.key(0), data)
    return svi.update(state, data)


def test_errors():
    data = gaussian_data(300)
    guide = flow_guide(
        "x", D, rng_key=jax.random.key(0), flow="coupling-affine", flow_layers=1, nn_width=8
    )
    loss = FlowContrastiveEstimation()
    with pytest.raises(ValueError, match="log_Z"):
        _run_once(lambda d: gaussian_model(d, with_log_Z=False), guide, loss, data)
    with pytest.raises(ValueError, match="no sample site named 'x'"):
        other_site = flow_guide(
            "y",
            D,
            rng_key=jax.random.key(0),
            flow="coupling-affine",
            flow_layers=1,
            param_name="x_flow",
        )
        _run_once(gaussian_model, other_site, loss, data)
    with pytest.raises(ValueError, match="flow guide"):
        loss.loss(jax.random.key(0), {}, gaussian_model, no_guide, data)
    with pytest.raises(ValueError, match="num_noise"):
        FlowContrastiveEstimation(num_noise=0)
    with pytest.raises(TypeError, match="num_noise"):
        FlowContrastiveEstimation(num_noise=1.5)
    with pytest.raises(ValueError, match="flow_mle_weight"):
        FlowContrastiveEstimation(flow_mle_weight=-0.1)
    with pytest.raises(ValueError, match="`flow`"):
        flow_guide("x", D, flow="maf")
    with pytest.raises(ValueError, match="event_dim"):
        flow_guide("x", 1)
    with pytest.raises(TypeError, match="rng_key.*required"):
        flow_guide("x", D)
    with pytest.raises(TypeError, match="rng_key.*not an int seed"):
        flow_guide("x", D, 0)
    with pytest.raises(TypeError, match="flow_params"):
        fce_optimizer("x_flow")
    with pytest.raises(ValueError, match="num_updates"):
        fce_optimizer(["x_flow"], num_updates=0)


def test_flow_guide_is_a_numpyro_guide():
    guide = flow_guide(
        "x", 3, rng_key=jax.random.key(0), flow="coupling-spline", flow_layers=2, loc=1.0, scale=2.0
    )
    assert isinstance(guide, FlowGuide)
    tr = numpyro.handlers.trace(numpyro.handlers.seed(guide, 0)).get_trace()
    assert tr["x"]["type"] == "sample" and tr["x"]["value"].shape == (3,)
    assert tr["x_flow"]["type"] == "param"
    params = {"x_flow": tr["x_flow"]["value"]}
    x = jax.random.normal(jax.random.key(1), (5, 3))
    # The NumPyro site's log_prob and the flowjax flow's agree.
    np.testing.assert_allclose(
        tr["x"]["fn"].log_prob(x), guide.log_prob(params, x), rtol=1e-5, atol=1e-5
    )


@pytest.mark.slow
def test_fce_learns_gaussian_log_Z_5d():
    dim = 5
    rng = np.random.default_rng(0)
    chol_true = np.tril(rng.normal(size=(dim, dim)) * 0.3) + np.eye(dim)
    data = jax.random.normal(jax.random.key(0), (8000, dim)) @ jnp.asarray(chol_true).T

    def model(data):
        m = numpyro.param("mu", jnp.zeros(dim))
        chol = numpyro.param("P_chol", jnp.eye(dim))
        log_Z = numpyro.param("log_Z", 0.0)

        def energy(x):
            return 0.5 * (((x - m) @ jnp.tril(chol)) ** 2).sum(-1)

        with numpyro.plate("data", data.shape[0], subsample_size=256):
            batch = numpyro.subsample(data, event_dim=1)
            numpyro.sample("x", Unnormalized(energy, (dim,), log_Z=log_Z), obs=batch)

    guide = flow_guide(
        "x",
        dim,
        rng_key=jax.random.key(1),
        flow="coupling-affine",
        loc=data.mean(0),
        scale=data.std(0),
    )
    num_updates = 6000
    svi = SVI(
        model,
        guide,
        fce_optimizer(guide, ebm_lr=5e-3, flow_lr=1e-3, num_updates=num_updates),
        loss=FlowContrastiveEstimation(num_noise=1, flow_mle_weight=0.1),
    )
    params = svi.run(jax.random.key(2), num_updates, data, progress_bar=False).params
    chol = jnp.tril(params["P_chol"])
    closed_form = 0.5 * dim * math.log(2 * math.pi) - 0.5 * jnp.linalg.slogdet(chol @ chol.T)[1]
    assert abs(float(params["log_Z"] - closed_form)) < 0.1
