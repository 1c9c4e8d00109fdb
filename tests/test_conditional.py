"""Conditional energies over a class label: ConditionalMaximumLikelihood (exact and sampled
negatives) equals the cross-entropy gradient, reaches logistic regression on a separable problem,
and combines with PCD into a joint EBM (JEM)."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro.infer import SVI, Trace_ELBO

import numpyro_ebm
from numpyro_ebm.estimators import (
    CombinedLoss,
    ConditionalMaximumLikelihood,
    ContrastiveDivergence,
    PersistentContrastiveDivergence,
    conditional_nll,
    enumerate_energies,
    joint_energy,
    label_ebm,
    label_energies,
    no_guide,
    split_key,
)

K, D = 3, 4


def linear_model(x, y=None, subsample_size=None):
    W = numpyro.param("W", jnp.zeros((D, K)))
    b = numpyro.param("b", jnp.zeros(K))
    with numpyro.plate("data", x.shape[0], subsample_size=subsample_size):
        xb = numpyro.subsample(x, event_dim=1)
        yb = None if y is None else numpyro.subsample(y, event_dim=0)
        numpyro.sample("y", label_ebm(xb @ W + b), obs=yb)


def categorical_model(x, y=None):
    W = numpyro.param("W", jnp.zeros((D, K)))
    b = numpyro.param("b", jnp.zeros(K))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Categorical(logits=-(x @ W + b)), obs=y)


def problem(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, D)).astype(np.float32)
    y = rng.integers(0, K, size=n).astype(np.int32)
    params = {
        "W": jnp.asarray(rng.normal(size=(D, K)), jnp.float32),
        "b": jnp.asarray(rng.normal(size=K), jnp.float32),
    }
    return jnp.asarray(x), jnp.asarray(y), params


def loss_grad(loss, model, params, x, y, key=0):
    def f(p):
        return loss.loss(jax.random.key(key), p, model, no_guide, x, y)

    return jax.value_and_grad(f)(params)


def cross_entropy(params, x, y):
    logits = -(x @ params["W"] + params["b"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


# ------------------------------------------------------------------------------------------
# building blocks


def test_label_ebm_energy_and_enumeration():
    table = jnp.arange(12.0).reshape(4, 3)
    ebm = label_ebm(table)
    assert ebm.event_shape == () and ebm.support.is_discrete
    np.testing.assert_allclose(ebm.energy(jnp.array([0, 1, 2, 0])), [0.0, 4.0, 8.0, 9.0])
    np.testing.assert_allclose(ebm.energy(jnp.zeros((5, 4), jnp.int32)).shape, (5, 4))
    np.testing.assert_allclose(enumerate_energies(ebm, (4,)), table)
    np.testing.assert_allclose(joint_energy(table), -jax.nn.logsumexp(-table, -1), rtol=1e-6)
    with pytest.raises(ValueError, match="K >= 2"):
        label_ebm(jnp.zeros((4, 1)))


def test_enumeration_errors():
    ebm = numpyro_ebm.Unnormalized(lambda x: x.sum(-1), (2,))
    with pytest.raises(ValueError, match="event_shape"):
        enumerate_energies(ebm, (3,))
    ebm = numpyro_ebm.Unnormalized(lambda x: x, ())
    with pytest.raises(ValueError, match="finite support"):
        enumerate_energies(ebm, (3,))
    with pytest.raises(ValueError, match="negatives"):
        ConditionalMaximumLikelihood(negatives="mcmc")


# ------------------------------------------------------------------------------------------
# the gradient


def test_exact_gradient_equals_cross_entropy_and_trace_elbo():
    x, y, params = problem()
    value, grad = loss_grad(ConditionalMaximumLikelihood(), linear_model, params, x, y)
    ce_value, ce_grad = jax.value_and_grad(cross_entropy)(params, x, y)
    np.testing.assert_allclose(value, ce_value, rtol=1e-5)
    np.testing.assert_allclose(value, conditional_nll(x @ params["W"] + params["b"], y), rtol=1e-5)
    for k in params:
        np.testing.assert_allclose(grad[k], ce_grad[k], rtol=1e-5, atol=1e-6)
    # NumPyro's ELBO on the normalized Categorical: the same model (its loss is a sum, not a mean)
    elbo_grad = jax.grad(
        lambda p: Trace_ELBO().loss(jax.random.key(0), p, categorical_model, no_guide, x, y)
    )(params)
    for k in params:
        np.testing.assert_allclose(grad[k] * x.shape[0], elbo_grad[k], rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # 14 s; test_conditional_cd trains a conditional energy with sampled negatives
def test_sampled_negatives_are_unbiased_cd():
    """CD with an exact categorical Gibbs draw per example: its gradient, averaged over seeds,
    equals the cross-entropy gradient within 4 standard errors (and differs between seeds)."""
    x, y, params = problem()
    _, exact = jax.value_and_grad(cross_entropy)(params, x, y)
    loss = ConditionalMaximumLikelihood(negatives="sample", num_samples=16)
    grads = jax.vmap(
        lambda k: jax.grad(lambda p: loss.loss(k, p, linear_model, no_guide, x, y))(params)
    )(jax.random.split(jax.random.key(1), 200))
    for k in params:
        g = np.asarray(grads[k]).reshape(200, -1)
        mean, se = g.mean(0), g.std(0, ddof=1) / np.sqrt(200)
        assert np.all(se > 0)
        assert np.all(np.abs(mean - np.asarray(exact[k]).ravel()) < 4 * se + 1e-6)


def test_exact_penalty_is_expected_sampled_penalty():
    x, y, params = problem(n=16)
    alpha = 0.3
    exact = ConditionalMaximumLikelihood(alpha=alpha)
    _, g_exact = loss_grad(exact, linear_model, params, x, y)
    sample = ConditionalMaximumLikelihood(negatives="sample", num_samples=20000, alpha=alpha)
    _, g_sample = loss_grad(sample, linear_model, params, x, y)
    for k in params:
        np.testing.assert_allclose(g_sample[k], g_exact[k], atol=0.03)


# ------------------------------------------------------------------------------------------
# training


def separable_data(n, seed):
    centers = 3.0 * np.random.default_rng(123).normal(size=(K, D))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, size=n)
    x = centers[y] + rng.normal(size=(n, D))
    return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)


def test_conditional_ebm_matches_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    x, y = separable_data(600, 0)
    x_test, y_test = separable_data(600, 1)
    svi = SVI(
        partial(linear_model, subsample_size=128), no_guide, optax.adam(0.05),
        loss=ConditionalMaximumLikelihood(),
    )
    result = svi.run(jax.random.key(0), 600, x, y, progress_bar=False)
    pred = label_energies(linear_model, result.params, "y", model_args=(x_test,)).argmin(-1)
    acc = float((pred == y_test).mean())
    lr = LogisticRegression(max_iter=1000).fit(np.asarray(x), np.asarray(y))
    lr_acc = lr.score(np.asarray(x_test), np.asarray(y_test))
    assert acc >= lr_acc - 0.01, (acc, lr_acc)
    assert acc > 0.9


# ------------------------------------------------------------------------------------------
# site selection and the joint EBM


def jem_model(x, y=None, subsample_size=32):
    W = numpyro.param("W", 0.1 * jnp.ones((D, K)))
    b = numpyro.param("b", jnp.zeros(K))

    def f(v):
        return 0.5 * jnp.sum(v**2, -1, keepdims=True) + v @ W + b  # (..., K)

    with numpyro.plate("data", x.shape[0], subsample_size=subsample_size):
        xb = numpyro.subsample(x, event_dim=1)
        yb = None if y is None else numpyro.subsample(y, event_dim=0)
        numpyro.sample("x", numpyro_ebm.Unnormalized(lambda v: joint_energy(f(v)), (D,)), obs=xb)
        numpyro.sample("y", label_ebm(f(xb)), obs=yb)


def test_cd_rejects_discrete_only_model_and_wrong_site_names():
    x, y, params = problem()
    cd = ContrastiveDivergence(partial(numpyro_ebm.ula, step_size=1e-2))
    with pytest.raises(ValueError, match="continuous support"):
        cd.loss(jax.random.key(0), params, linear_model, no_guide, x, y)
    with pytest.raises(ValueError, match="ConditionalMaximumLikelihood"):
        ContrastiveDivergence(partial(numpyro_ebm.ula, step_size=1e-2), sites=["y"]).loss(
            jax.random.key(0), params, jem_model, no_guide, x, y
        )
    with pytest.raises(ValueError, match="not observed"):
        ConditionalMaximumLikelihood(sites="z").loss(
            jax.random.key(0), params, linear_model, no_guide, x, y
        )
    with pytest.raises(ValueError, match="one entry per loss"):
        CombinedLoss(cd, weights=(1.0, 2.0))


@pytest.mark.slow  # long statistical test: `pytest -m slow`
def test_jem_combined_loss_is_sum_and_trains():
    x, y = separable_data(256, 2)
    box = dist.Uniform(-6.0, 6.0).expand([D]).to_event(1)
    pcd = PersistentContrastiveDivergence(
        partial(numpyro_ebm.ula, step_size=1e-2), num_steps=5, num_chains=32, buffer_size=128,
        init_dist=box, alpha=0.1,
    )
    cml = ConditionalMaximumLikelihood()
    jem = CombinedLoss(pcd, cml, weights=(1.0, 2.0))
    svi = SVI(jem_model, jem.guide, optax.adam(0.03), loss=jem)
    state = svi.init(jax.random.key(0), x, y)
    params = {**svi.get_params(state), **state.mutable_state}

    @jax.jit
    def losses(key, params):
        combined = jem.loss_with_mutable_state(key, params, jem_model, jem.guide, x, y)
        # member j of a CombinedLoss: the step's model key, and fold_in(loss_key, j)
        model_key, loss_key = split_key(key)
        members = [
            loss.estimate(
                model_key, jax.random.fold_in(loss_key, j), params, jem_model, jem.guide, (x, y)
            )
            for j, loss in enumerate((pcd, cml))
        ]
        return [combined["loss"]] + [o["loss"] for o in members], combined["mutable_state"]

    (total, pcd_loss, cml_loss), state = losses(jax.random.key(3), params)
    np.testing.assert_allclose(total, pcd_loss + 2.0 * cml_loss, rtol=1e-5)
    assert set(state) == {"pcd_chains"}
    result = svi.run(jax.random.key(1), 200, x, y, progress_bar=False)
    table = label_energies(
        jem_model, result.params, "y", model_args=(x,), model_kwargs={"subsample_size": None}
    )
    pred = table.argmin(-1)
    assert float((pred == y).mean()) > 0.9
    assert np.all(np.isfinite(np.asarray(result.losses)))


# ------------------------------------------------------------------------------------------
# CombinedLoss: one minibatch for every member


def test_combined_loss_members_see_the_same_minibatch():
    """DSM + PCD + ConditionalMaximumLikelihood in one CombinedLoss: every trace of the model in
    one step (DSM's, PCD's two, CML's) draws the same subsample indices, and every member's site
    data holds those rows. The data rows are their own indices."""
    import numpyro_ebm as ebm

    n, b = 40, 8
    traced = []  # the plate's subsample indices, one entry per trace of the model

    def model(rows):
        w = numpyro.param("w", 1.0)
        with numpyro.plate("data", n, subsample_size=b) as idx:
            traced.append(np.asarray(idx))
            xb = numpyro.subsample(rows, event_dim=0)  # (b,): the row indices, as floats
            e = lambda v: 0.5 * w * jnp.sum((v - 20.0) ** 2, -1)
            numpyro.sample("x", ebm.Unnormalized(e, (2,)), obs=jnp.stack([xb, xb], -1))
            numpyro.sample("z", ebm.Unnormalized(e, (1,)), obs=xb[:, None])
            numpyro.sample("y", label_ebm(w * jnp.ones((b, n))), obs=xb.astype(jnp.int32))

    seen = {}

    def spy(estimator, name):
        site_loss = estimator.site_loss

        def recorded(site, rng_key, state):
            seen[name] = np.asarray(site.data)
            return site_loss(site, rng_key, state)

        estimator.site_loss = recorded
        return estimator

    dsm = spy(ebm.DenoisingScoreMatching(0.1, sites=["z"]), "dsm")
    pcd = spy(
        PersistentContrastiveDivergence(
            partial(ebm.ula, step_size=0.1), num_steps=1, num_chains=16,
            init_dist={"x": dist.Normal(20.0, 10.0).expand([2]).to_event(1)}, sites=["x"],
        ),
        "pcd",
    )
    cml = spy(ConditionalMaximumLikelihood(), "cml")
    combined = CombinedLoss(dsm, pcd, cml)
    rows = jnp.arange(n, dtype=jnp.float32)
    svi = SVI(model, combined.guide, optax.adam(1e-2), loss=combined)
    state = svi.init(jax.random.key(0), rows)
    params = {**svi.get_params(state), **state.mutable_state}

    step_indices = []
    for key in (jax.random.key(7), jax.random.key(8)):
        traced.clear()
        out = combined.loss_with_mutable_state(key, params, model, combined.guide, rows)
        assert np.isfinite(float(out["loss"])) and set(out["mutable_state"]) == {"pcd_chains"}
        assert len(traced) == 4  # DSM, PCD (parameters and stop-gradient), CML
        for idx in traced[1:]:
            np.testing.assert_array_equal(idx, traced[0])
        np.testing.assert_array_equal(seen["dsm"][:, 0], traced[0])
        np.testing.assert_array_equal(seen["pcd"][:, 0], traced[0])
        np.testing.assert_array_equal(seen["pcd"][:, 1], traced[0])
        np.testing.assert_array_equal(seen["cml"], traced[0])
        step_indices.append(traced[0])
    assert not np.array_equal(*step_indices)  # a new minibatch at a new step
