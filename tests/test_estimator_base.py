"""The estimator base: a new estimator is one class with one ``site_loss`` (the worked example of
docs/estimators.md, "Writing an estimator"), the non-finite report, and the base's guide."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from jax.scipy.special import logsumexp
from numpyro.infer import SVI

import numpyro_ebm
from numpyro_ebm import EnergyEstimator


class ImportanceSampledML(EnergyEstimator):
    """Maximum likelihood with log Z estimated by importance sampling from a fixed proposal q:
    L = mean_n E(x_n) + log (1/K) sum_k exp(-E(y_k) - log q(y_k)),  y_k ~ q."""

    site_kind = "continuous"

    def __init__(self, proposal, num_samples=1024, sites=None):
        super().__init__(sites)
        self.proposal, self.num_samples = proposal, num_samples

    def site_loss(self, site, rng_key, state):
        y = self.proposal.sample(rng_key, (self.num_samples,))
        log_w = -site.dist.energy(y) - self.proposal.log_prob(y)
        log_Z = logsumexp(log_w) - jnp.log(self.num_samples)
        return jnp.mean(site.dist.energy(site.data)) + log_Z


def gaussian_model(data):
    mu = numpyro.param("mu", jnp.zeros(2))
    L = jnp.tril(numpyro.param("L", jnp.eye(2)))
    energy = lambda x: 0.5 * jnp.sum(((x - mu) @ L) ** 2, -1)
    with numpyro.plate("data", data.shape[0], subsample_size=256):
        batch = numpyro.subsample(data, event_dim=1)
        numpyro.sample("x", numpyro_ebm.Unnormalized(energy, (2,)), obs=batch)


def test_writing_an_estimator_is_one_site_loss():
    rng = np.random.default_rng(0)
    cov = np.array([[1.0, 0.4], [0.4, 0.5]])
    data = jnp.asarray(rng.multivariate_normal([0.5, -0.3], cov, size=2000), jnp.float32)
    proposal = dist.MultivariateNormal(data.mean(0), 2.0 * jnp.cov(data.T))
    loss = ImportanceSampledML(proposal, num_samples=4096)
    optim = optax.adam(optax.cosine_decay_schedule(3e-2, 800, 0.01))
    result = SVI(gaussian_model, loss.guide, optim, loss=loss).run(
        jax.random.key(0), 800, data, progress_bar=False
    )
    L = np.tril(np.asarray(result.params["L"]))
    sample_precision = np.linalg.inv(np.cov(np.asarray(data).T, bias=True))
    # the IS estimate of log Z is biased by O(1/K); the optimum is within a few percent
    err = np.abs(L @ L.T - sample_precision).max() / np.abs(sample_precision).max()
    assert err < 0.05, err
    np.testing.assert_allclose(result.params["mu"], data.mean(0), atol=0.05)
    assert "scale" not in numpyro_ebm.EBMSite._fields  # losses are per-example means


def scalar_model(data):
    a = numpyro.param("a", 0.0)
    with numpyro.plate("data", data.shape[0]):
        numpyro.sample(
            "x", numpyro_ebm.Unnormalized(lambda x: 0.5 * jnp.exp(a) * x**2, ()), obs=data
        )


def test_nonfinite_report_under_vmap():
    data = jnp.linspace(-1.0, 1.0, 9)
    dsm = numpyro_ebm.DenoisingScoreMatching(0.1)
    losses = jax.jit(
        jax.vmap(lambda a: dsm.loss(jax.random.key(0), {"a": a}, scalar_model, dsm.guide, data))
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # finite losses: no warning at all
        assert np.all(np.isfinite(losses(jnp.array([0.0, 1.0, -1.0]))))
        jax.effects_barrier()
    with pytest.warns(
        RuntimeWarning, match="DenoisingScoreMatching: non-finite loss; the energy of the data"
    ):
        out = losses(jnp.array([0.0, jnp.inf]))
        jax.effects_barrier()
    assert np.isfinite(out[0]) and not np.isfinite(out[1])


def test_base_guide_checks_the_data_and_holds_no_state():
    sm = numpyro_ebm.ScoreMatching()
    svi = SVI(scalar_model, sm.guide, optax.adam(1e-2), loss=sm)
    state = svi.init(jax.random.key(0), jnp.ones(4))
    assert state.mutable_state is None
    with pytest.raises(ValueError, match="model argument 0"):
        svi.init(jax.random.key(0), jnp.ones(4).at[1].set(jnp.nan))
    with pytest.raises(ValueError, match="model argument 0"):
        SVI(scalar_model, sm.make_guide(scalar_model), optax.adam(1e-2), loss=sm).init(
            jax.random.key(0), jnp.ones(4).at[1].set(jnp.nan)
        )


@pytest.mark.parametrize(
    "make",
    [
        lambda report: numpyro_ebm.DenoisingScoreMatching(0.1, report_nonfinite=report),
        lambda report: numpyro_ebm.ContrastiveDivergence(
            functools.partial(numpyro_ebm.ula, step_size=0.1), 2, report_nonfinite=report),
    ],
    ids=["dsm", "cd"],
)
def test_report_nonfinite_false_drops_the_host_callback(make):
    """The report is a host callback, which JAX's persistent compilation cache cannot store:
    ``report_nonfinite=False`` compiles the training step without it (and without a warning)."""
    data = jnp.linspace(-1.0, 1.0, 9)

    def step_text(loss):
        svi = SVI(scalar_model, loss.guide, optax.adam(1e-2), loss=loss)
        state = svi.init(jax.random.key(0), data)
        return jax.jit(svi.update).lower(state, data).as_text(), svi, state

    with_report, _, _ = step_text(make(True))
    without, svi, state = step_text(make(False))
    assert "callback" in with_report
    assert "callback" not in without
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no report, even for a non-finite loss
        _, loss = jax.jit(svi.update)(state, data.at[0].set(jnp.inf))
        jax.effects_barrier()
    assert not np.isfinite(loss)
    with pytest.raises(TypeError, match="report_nonfinite"):
        make("no")


def test_default_report_evaluates_the_data_energy_only_on_a_failing_step():
    """The default report tests the loss; the data's energy (to name the cause) is evaluated
    only in the branch a failing step takes. ``"full"`` evaluates it on every step. Counted with
    a host callback in the energy that records each evaluation on exactly the data."""
    data = jnp.linspace(-1.0, 1.0, 9)
    seen, current = [], [data]

    def count(x):  # an evaluation on exactly the minibatch of the step
        seen.append(bool(np.array_equal(np.asarray(x), np.asarray(current[0]))))

    def model(data):
        a = numpyro.param("a", 0.0)

        def energy(x):
            jax.debug.callback(count, x)
            return 0.5 * jnp.exp(a) * x**2

        with numpyro.plate("data", data.shape[0]):
            numpyro.sample("x", numpyro_ebm.Unnormalized(energy, ()), obs=data)

    def data_evaluations(report, batch, steps=3):
        loss = numpyro_ebm.DenoisingScoreMatching(0.1, report_nonfinite=report)
        svi = SVI(model, loss.guide, optax.adam(1e-2), loss=loss)
        state = svi.init(jax.random.key(0), data)  # init checks its data: a finite one
        update = jax.jit(svi.update)
        jax.effects_barrier()
        seen.clear()
        current[0] = batch
        for _ in range(steps):
            state, _ = update(state, batch)
        jax.effects_barrier()
        return sum(seen)

    assert data_evaluations(True, data) == 0  # DSM evaluates the energy at noisy data only
    assert data_evaluations("full", data) == 3
    bad = data.at[0].set(jnp.inf)
    with pytest.warns(RuntimeWarning, match="observed data itself holds NaN or inf"):
        assert data_evaluations(True, bad) == 3
        jax.effects_barrier()


def _mlp_model(data):
    w1 = numpyro.param("w1", 0.3 * jnp.ones((2, 16)))
    w2 = numpyro.param("w2", 0.3 * jnp.ones((16,)))

    def energy(x):
        return jnp.tanh(x @ w1) @ w2 + 0.5 * jnp.sum(x**2, -1)

    with numpyro.plate("data", data.shape[0]):
        numpyro.sample("x", numpyro_ebm.Unnormalized(energy, (2,)), obs=data)


@pytest.mark.parametrize("report", [True, "full"])
def test_cd_report_reuses_the_loss_energy_of_the_data(report):
    """CD's loss evaluates the energy of the data itself (``data_energy_in_loss``): the report
    takes that evaluation as its operand, so the compiled step holds no second copy of the
    energy (it used to recompute it in the branch of a failing step, ~0.1 s of compilation for
    an RBM). Counted in XLA's optimized program: as many matrix products and tanh as without a
    report (with the energy recomputed in the branch: 13 products against 11)."""
    data = jax.random.normal(jax.random.key(0), (32, 2))
    kernel = functools.partial(numpyro_ebm.ula, step_size=0.01)

    def dots(report):
        loss = numpyro_ebm.ContrastiveDivergence(kernel, 2, report_nonfinite=report)
        svi = SVI(_mlp_model, loss.guide, optax.sgd(1e-2), loss=loss)
        state = svi.init(jax.random.key(0), data)
        text = jax.jit(svi.update).lower(state, data).compile().as_text()
        return text.count(" dot("), text.count(" tanh(")

    assert numpyro_ebm.ContrastiveDivergence.data_energy_in_loss
    assert not numpyro_ebm.DenoisingScoreMatching.data_energy_in_loss
    assert dots(report) == dots(False)


@pytest.mark.parametrize(
    "make",
    [
        lambda: numpyro_ebm.DenoisingScoreMatching(0.1),
        lambda: numpyro_ebm.ContrastiveDivergence(
            functools.partial(numpyro_ebm.ula, step_size=0.1), 2),
    ],
    ids=["dsm: energy in the branch", "cd: energy from the loss"],
)
def test_report_names_a_non_finite_energy_of_the_data(make):
    """Parameters that make the energy of the data infinite: the report names that cause (found
    on the host from the energy the branch passes, or evaluates), not the estimator's hint."""
    data = jnp.linspace(-1.0, 1.0, 9)
    loss = make()
    svi = SVI(scalar_model, loss.guide, optax.adam(1e-2), loss=loss)
    state = svi.init(jax.random.key(0), data)
    params = {**svi.get_params(state), "a": jnp.asarray(1e3)}  # exp(1000) = inf
    step = jax.jit(lambda p: loss.loss(jax.random.key(1), p, scalar_model, loss.guide, data))
    with pytest.warns(RuntimeWarning, match="energy of the data is not finite"):
        value = step(params)
        jax.effects_barrier()
    assert not np.isfinite(float(value))
