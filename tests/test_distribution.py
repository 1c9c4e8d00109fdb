"""Unnormalized as a NumPyro site: log_prob, plates, subsampling, latent NUTS, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro import handlers
from numpyro.infer import MCMC, NUTS
from numpyro.infer.util import log_density

from numpyro_ebm import Unnormalized, energy_factor


def quadratic(x):
    return 0.5 * jnp.sum(x**2, -1)


def test_log_prob_is_minus_energy_and_log_Z():
    x = jnp.array([[1.0, 2.0], [0.0, -1.0]])
    d = Unnormalized(quadratic, event_shape=(2,))
    np.testing.assert_allclose(d.log_prob(x), -quadratic(x))
    d = Unnormalized(quadratic, event_shape=(2,), log_Z=jnp.log(2 * jnp.pi))
    np.testing.assert_allclose(d.log_prob(x), dist.Normal(0, 1).expand([2]).to_event(1).log_prob(x), rtol=1e-6)


def test_energy_with_trailing_unit_axis_is_squeezed():
    d = Unnormalized(lambda x: quadratic(x)[..., None], event_shape=(2,))
    assert d.log_prob(jnp.ones((5, 2))).shape == (5,)


def test_scalar_event_and_support():
    d = Unnormalized(lambda x: x, support=dist.constraints.positive)
    assert d.event_shape == () and d.support is dist.constraints.positive
    d2 = Unnormalized(quadratic, event_shape=(3,), support=dist.constraints.positive)
    assert d2.support.event_dim == 1


def test_under_plate_observed_and_subsampled():
    data = jnp.arange(20.0).reshape(10, 2)

    def model(subsample_size=None):
        with numpyro.plate("data", 10, subsample_size=subsample_size):
            batch = numpyro.subsample(data, event_dim=1)
            numpyro.sample("x", Unnormalized(quadratic, (2,)), obs=batch)

    lp, _ = log_density(model, (), {}, {})
    np.testing.assert_allclose(lp, -quadratic(data).sum(), rtol=1e-6)
    with handlers.seed(rng_seed=0):
        tr = handlers.trace(model).get_trace(subsample_size=4)
    assert tr["x"]["value"].shape == (4, 2)
    assert tr["x"]["fn"].batch_shape == (4,)
    assert isinstance(tr["x"]["fn"], Unnormalized)  # expand keeps the class (no wrapper)
    assert tr["x"]["scale"] == pytest.approx(10 / 4)
    lp4 = tr["x"]["fn"].log_prob(tr["x"]["value"])
    np.testing.assert_allclose(lp4, -quadratic(tr["x"]["value"]), rtol=1e-6)


def test_latent_site_under_nuts_matches_known_posterior():
    # prior energy 0.5 (z - 1)^2 / 0.5^2 (N(1, 0.5^2)), likelihood y ~ N(z, 1) at y = 3:
    # posterior N(m, s^2) with s^2 = 1 / (4 + 1) = 0.2, m = s^2 (4 * 1 + 3) = 1.4
    def model(y):
        z = numpyro.sample("z", Unnormalized(lambda z: 0.5 * (z - 1.0) ** 2 / 0.25))
        numpyro.sample("y", dist.Normal(z, 1.0), obs=y)

    mcmc = MCMC(NUTS(model), num_warmup=500, num_samples=4000, progress_bar=False)
    mcmc.run(jax.random.key(0), 3.0)
    z = mcmc.get_samples()["z"]
    ess = numpyro.diagnostics.effective_sample_size(np.asarray(z)[None])
    se_mean = np.sqrt(0.2 / ess)
    assert abs(float(z.mean()) - 1.4) < 4 * se_mean
    assert abs(float(z.var()) - 0.2) < 4 * 0.2 * np.sqrt(2 / ess)


def test_energy_factor_adds_minus_energy():
    def model():
        energy_factor("prior", jnp.array(2.5))

    lp, _ = log_density(model, (), {}, {})
    np.testing.assert_allclose(lp, -2.5)


def test_sample_raises_and_points_to_samplers():
    d = Unnormalized(quadratic, (2,))
    with pytest.raises(NotImplementedError, match="sample_chains"):
        d.sample(jax.random.key(0))


@pytest.mark.parametrize("bad", [None, 3.0, "energy"])
def test_missing_energy_fn_is_an_error(bad):
    with pytest.raises(TypeError, match="energy_fn"):
        Unnormalized(bad)


def test_wrong_energy_output_shape_is_an_error():
    d = Unnormalized(lambda x: x, event_shape=(2,))  # returns (..., 2) instead of (...)
    with pytest.raises(ValueError, match="energy_fn"):
        d.log_prob(jnp.ones((4, 2)))


def test_value_with_wrong_event_shape_is_an_error():
    d = Unnormalized(quadratic, event_shape=(2,))
    with pytest.raises(ValueError, match="event shape"):
        d.log_prob(jnp.ones((4, 3)))


def test_is_a_pytree_and_jittable():
    d = Unnormalized(quadratic, (2,), log_Z=jnp.array(1.0))
    out = jax.jit(lambda d, x: d.log_prob(x))(d, jnp.ones((3, 2)))
    np.testing.assert_allclose(out, -1.0 - 1.0)


def test_energy_of_another_shape_of_the_same_size_is_not_reshaped():
    # a batch (2, 3) of scalar events whose energy comes back transposed, (3, 2)
    d = Unnormalized(lambda x: x.T, event_shape=())
    with pytest.raises(ValueError, match=r"returned shape \(3, 2\) for a value of shape \(2, 3\)"):
        d.log_prob(jnp.ones((2, 3)))
    # a flattened energy (6,) for a batch (2, 3) is refused too; (2, 3, 1) is squeezed
    with pytest.raises(ValueError, match="energy_fn"):
        Unnormalized(lambda x: x.reshape(-1), event_shape=()).log_prob(jnp.ones((2, 3)))
    assert Unnormalized(lambda x: x[..., None], event_shape=()).log_prob(jnp.ones((2, 3))).shape == (2, 3)


@pytest.mark.parametrize("log_Z", [float("nan"), float("inf"), jnp.array(jnp.nan)])
def test_non_finite_log_Z_is_an_error(log_Z):
    with pytest.raises(ValueError, match="`log_Z` must be finite"):
        Unnormalized(quadratic, event_shape=(2,), log_Z=log_Z)
    # traced values are not checked (jittable)
    jax.jit(lambda z: Unnormalized(quadratic, event_shape=(2,), log_Z=z).log_prob(jnp.ones(2)))(1.0)


def test_enable_compilation_cache_sets_jax_config(tmp_path, monkeypatch):
    import jax

    import numpyro_ebm

    before = jax.config.jax_compilation_cache_dir
    before_min = jax.config.jax_persistent_cache_min_compile_time_secs
    try:
        monkeypatch.delenv("NUMPYRO_EBM_NO_CACHE", raising=False)
        assert numpyro_ebm.enable_compilation_cache(str(tmp_path / "c")) == str(tmp_path / "c")
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "c")
        monkeypatch.setenv("NUMPYRO_EBM_NO_CACHE", "1")
        assert numpyro_ebm.enable_compilation_cache(str(tmp_path / "d")) is None
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "c")
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", before_min)


def test_estimators_refuse_an_energy_factor_and_show_the_unnormalized_form():
    # An EBM written as a factor has no observed site to draw negatives for: every estimator
    # stops with an error that shows the Unnormalized form (docs/ebms_in_models.md).
    import numpyro_ebm

    def model(data):
        mu = numpyro.param("mu", jnp.zeros(2))
        energy_factor("ebm", 0.5 * jnp.sum((data - mu) ** 2))

    data = jax.random.normal(jax.random.key(0), (50, 2))
    noise = dist.Normal(0.0, 1.0).expand([2]).to_event(1)
    for loss in (
        numpyro_ebm.ContrastiveDivergence(None),
        numpyro_ebm.SlicedScoreMatching(),
        numpyro_ebm.NoiseContrastiveEstimation(noise),
    ):
        match = r"no observed numpyro_ebm.Unnormalized site.*Unnormalized\(energy_fn"
        with pytest.raises(ValueError, match=match):
            loss.loss(jax.random.key(1), {"mu": jnp.zeros(2)}, model, numpyro_ebm.no_guide, data)
