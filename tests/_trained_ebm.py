"""A small MLP EBM trained by denoising score matching on two moons, shared by slow tests."""

import jax
import numpyro
import optax
from numpyro.contrib.module import flax_module
from numpyro.infer import SVI

import numpyro_ebm
from numpyro_ebm.datasets import two_moons
from numpyro_ebm.nets import MLPEnergy


def trained_two_moons_energy(num_updates=2000):
    """``(energy, data)``: ``energy(x)`` of an MLP EBM trained with DSM(0.1) on 4000 draws."""

    def model(data):
        net = flax_module("energy", MLPEnergy(), input_shape=(1, 2))
        with numpyro.plate("data", data.shape[0], subsample_size=256):
            batch = numpyro.subsample(data, event_dim=1)
            numpyro.sample("x", numpyro_ebm.Unnormalized(net, (2,)), obs=batch)

    data = two_moons().sample(jax.random.key(1), (4000,))
    loss = numpyro_ebm.DenoisingScoreMatching(0.1)
    svi = SVI(model, numpyro_ebm.no_guide, optax.adam(1e-3), loss=loss)
    params = svi.run(jax.random.key(2), num_updates, data, progress_bar=False).params
    E = numpyro_ebm.energy_fn(model, "x", model_args=(data,))
    return (lambda x: E(params, x)), data
