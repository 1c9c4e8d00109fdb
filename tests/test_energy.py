"""energy_fn: E(params, x) extracted from a NumPyro model, for plain and Flax energies."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.contrib.module import flax_module

from numpyro_ebm import Unnormalized, energy_fn
from numpyro_ebm.nets import MLPEnergy

MLP = partial(MLPEnergy, hidden=(16,))


def flax_model(data):
    net = flax_module("energy", MLP(), input_shape=(1, 2))
    with numpyro.plate("data", data.shape[0]):
        numpyro.sample("x", Unnormalized(net, (2,)), obs=data)


def hand_energy(params, x):
    p = params["energy$params"]
    h = jax.nn.swish(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    return (h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"])[..., 0]


@pytest.fixture(scope="module")
def flax_setup():
    data = jax.random.normal(jax.random.key(0), (8, 2))
    params = {
        "energy$params": MLP().init(jax.random.key(1), jnp.ones((1, 2)))["params"],
    }
    return data, params


def test_flax_energy_equals_hand_written(flax_setup):
    data, params = flax_setup
    E = energy_fn(flax_model, "x", model_args=(data,))
    x = jax.random.normal(jax.random.key(2), (5, 2))
    np.testing.assert_allclose(E(params, x), hand_energy(params, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.jit(E)(params, x), hand_energy(params, x), rtol=1e-5, atol=1e-6)


def test_flax_energy_gradients_in_params_and_x(flax_setup):
    data, params = flax_setup
    E = energy_fn(flax_model, "x", model_args=(data,))
    x = jax.random.normal(jax.random.key(3), (5, 2))
    g_ours = jax.grad(lambda p: E(p, x).sum())(params)
    g_hand = jax.grad(lambda p: hand_energy(p, x).sum())(params)
    for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_hand)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    gx = jax.grad(lambda x: E(params, x).sum())(x)
    gx_hand = jax.grad(lambda x: hand_energy(params, x).sum())(x)
    np.testing.assert_allclose(gx, gx_hand, rtol=1e-5, atol=1e-6)


def test_param_site_energy_with_log_Z_and_svi_param_dict():
    def model(data=None):
        mu = numpyro.param("mu", jnp.zeros(2))
        log_Z = numpyro.param("log_Z", 0.0)
        numpyro.sample(
            "x",
            Unnormalized(lambda x: 0.5 * jnp.sum((x - mu) ** 2, -1), (2,), log_Z=log_Z),
            obs=data,
        )

    E = energy_fn(model, "x")
    params = {"mu": jnp.array([1.0, -1.0]), "log_Z": jnp.array(0.5)}
    x = jnp.array([[1.0, -1.0], [2.0, 0.0]])
    np.testing.assert_allclose(E(params, x), jnp.array([0.0, 1.0]) + 0.5, rtol=1e-6)
    g = jax.grad(lambda p: E(p, x).sum())(params)
    np.testing.assert_allclose(g["mu"], -((x - params["mu"]).sum(0)), rtol=1e-6)
    np.testing.assert_allclose(g["log_Z"], 2.0)


def test_ordinary_distribution_site_is_minus_log_prob():
    def model():
        s = numpyro.param("s", 2.0, constraint=dist.constraints.positive)
        numpyro.sample("y", dist.Normal(0.0, s))

    E = energy_fn(model, "y")
    x = jnp.array([0.5, -1.0])
    np.testing.assert_allclose(E({"s": 2.0}, x), -dist.Normal(0.0, 2.0).log_prob(x), rtol=1e-6)


def test_latent_unnormalized_site_with_other_latents():
    def model():
        a = numpyro.sample("a", dist.Normal(0.0, 1.0))
        numpyro.sample("z", Unnormalized(lambda z: (z - a) ** 2))

    E = energy_fn(model, "z")
    assert E({"a": 1.0}, jnp.array([1.0, 3.0])).tolist() == [0.0, 4.0]


def test_unknown_site_is_an_error():
    with pytest.raises(ValueError, match="'nope'.*sample sites are \\['x'\\]"):
        energy_fn(flax_model, "nope", model_args=(jnp.zeros((3, 2)),))


def test_non_callable_model_is_an_error():
    with pytest.raises(TypeError, match="model"):
        energy_fn(None, "x")


def _two_param_model(data=None):
    mu = numpyro.param("mu", jnp.zeros(2))
    log_Z = numpyro.param("log_Z", 0.0)
    numpyro.sample(
        "x", Unnormalized(lambda x: 0.5 * jnp.sum((x - mu) ** 2, -1), (2,), log_Z=log_Z), obs=data
    )


def test_misspelt_param_key_is_an_error():
    E = energy_fn(_two_param_model, "x")
    x = jnp.ones((3, 2))
    with pytest.raises(
        ValueError, match=r"\['mu_'\] that are no site.*param sites are \['mu', 'log_Z'\]"
    ):
        E({"mu_": jnp.ones(2), "log_Z": 0.0}, x)
    with pytest.raises(ValueError, match=r"\['mu_'\]"):  # also under jit: the keys are static
        jax.jit(E)({"mu_": jnp.ones(2), "log_Z": 0.0}, x)


def test_missing_param_key_is_an_error_unless_empty_on_purpose():
    E = energy_fn(_two_param_model, "x")
    x = jnp.ones((3, 2))
    with pytest.raises(ValueError, match=r"lacks the model's numpyro.param site\(s\) \['log_Z'\]"):
        E({"mu": jnp.ones(2)}, x)
    np.testing.assert_allclose(E({}, x), E(None, x))
    np.testing.assert_allclose(E({}, x), 1.0)  # the initial values: mu = 0, log_Z = 0
    with pytest.raises(TypeError, match="`params` must be a dict"):
        E([1.0], x)


def test_flax_energy_with_its_params_missing_is_an_error(flax_setup):
    data, params = flax_setup

    def model(data):
        net = flax_module("energy", MLP(), input_shape=(1, 2))
        log_Z = numpyro.param("log_Z", 0.0)
        with numpyro.plate("data", data.shape[0]):
            numpyro.sample("x", Unnormalized(net, (2,), log_Z=log_Z), obs=data)

    E = energy_fn(model, "x", model_args=(data,))
    with pytest.raises(ValueError, match=r"\['energy\$params'\]"):
        E({"log_Z": 0.0}, data)  # would otherwise use a fresh network
    E({**params, "log_Z": 0.0}, data)


def test_extra_keys_beside_a_complete_set_are_the_guides_and_accepted():
    E = energy_fn(_two_param_model, "x")
    x = jnp.ones((3, 2))
    full = {"mu": jnp.ones(2), "log_Z": jnp.asarray(0.5)}
    np.testing.assert_allclose(E({**full, "x_flow": {"w": jnp.zeros(3)}}, x), E(full, x))


def test_misspelt_latent_site_is_an_error():
    def model():
        a = numpyro.sample("a", dist.Normal(0.0, 1.0))
        numpyro.sample("z", Unnormalized(lambda z: (z - a) ** 2))

    with pytest.raises(ValueError, match=r"\['A'\] that are no site.*latent site\(s\) \['a'\]"):
        energy_fn(model, "z")({"A": 1.0}, jnp.array([1.0, 3.0]))
