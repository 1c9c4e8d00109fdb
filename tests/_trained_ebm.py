"""A small MLP EBM trained by denoising score matching on two moons, shared by slow tests."""

import math

import jax
import jax.numpy as jnp
import numpyro
import optax
from numpyro.infer import SVI

import numpyro_ebm
from numpyro_ebm.datasets import two_moons


def init_mlp(key, sizes=(2, 64, 64, 1)):
    params = {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        key, k = jax.random.split(key)
        params[f"W{i}"] = jax.random.normal(k, (a, b)) / math.sqrt(a)
        params[f"b{i}"] = jnp.zeros(b)
    return params


def mlp(params, x):
    """An MLP energy ``(..., 2) -> (...)`` with swish activations."""
    n = len(params) // 2
    h = x
    for i in range(n):
        h = h @ params[f"W{i}"] + params[f"b{i}"]
        if i < n - 1:
            h = jax.nn.swish(h)
    return h[..., 0]


def trained_two_moons_energy(num_steps=2000):
    """``(energy, data)``: ``energy(x)`` of an MLP EBM trained with DSM(0.1) on 4000 draws."""
    init = init_mlp(jax.random.key(0))

    def model(data):
        params = {k: numpyro.param(k, v) for k, v in init.items()}
        with numpyro.plate("data", data.shape[0], subsample_size=256):
            batch = numpyro.subsample(data, event_dim=1)
            numpyro.sample("x", numpyro_ebm.Unnormalized(lambda x: mlp(params, x), (2,)), obs=batch)

    data = two_moons().sample(jax.random.key(1), (4000,))
    loss = numpyro_ebm.DenoisingScoreMatching(0.1)
    svi = SVI(model, numpyro_ebm.no_guide, optax.adam(1e-3), loss=loss)
    params = svi.run(jax.random.key(2), num_steps, data, progress_bar=False).params
    E = numpyro_ebm.energy_fn(model, "x", model_args=(data,))
    return (lambda x: E(params, x)), data
