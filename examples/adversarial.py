r"""Adversarial training: an EBM and its amortized sampler from one SVI run.

An MLP energy :math:`E_\theta` and a generator :math:`q_\phi` (the guide) play

.. math::

    \min_\theta \max_\phi\; \mathbb E_{\rm data}[E_\theta] - \mathbb E_{q_\phi}[E_\theta]
        + H(q_\phi)

(:class:`numpyro_ebm.AdversarialEstimation`): the generator minimizes KL(q || p_theta), the EBM
does contrastive divergence with the generator's draws as negatives. With a normalizing flow
(``--generator flow``, :func:`numpyro_ebm.flow_guide`) the entropy is exact and
:math:`\mathbb E_q[-E] + H(q)` is a lower bound on :math:`\log Z` (printed next to quadrature);
with an MLP generator (``--generator vera``, :func:`numpyro_ebm.generator_guide`) the entropy
gradient is VERA's estimate.

For ``two_moons`` and ``rings`` it plots, side by side: the EBM density (normalized by grid
quadrature), draws of the generator (one batched call) and MALA draws of the EBM (many short
chains started at the generator's draws), and prints each model's test NLL gap to the truth.

Run: ``python examples/adversarial.py`` (a few minutes on a laptop CPU);
``python examples/adversarial.py --smoke`` for a seconds-long check.
"""

from __future__ import annotations

import argparse
import functools

import blackjax
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import numpyro
from numpyro.contrib.module import flax_module
from numpyro.infer import SVI

import numpyro_ebm
from numpyro_ebm import datasets

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BOX = 6.0  # quadrature box [-BOX, BOX]^2
PLOT = 4.5
DATASETS = ("two_moons", "rings")


def make_model(hidden):
    def model(data):
        energy = flax_module("energy", numpyro_ebm.nets.MLPEnergy(hidden), input_shape=(1, 2))
        with numpyro.plate("data", data.shape[0], subsample_size=256):
            batch = numpyro.subsample(data, event_dim=1)
            numpyro.sample("x", numpyro_ebm.Unnormalized(energy, (2,)), obs=batch)

    return model


def train(dataset, args, rng_key):
    k_data, k_test, k_guide, k_train = jax.random.split(rng_key, 4)
    truth = datasets.TOY_DENSITIES[dataset]()
    data = truth.sample(k_data, (args.num_train,))
    test = truth.sample(k_test, (5000,))
    model = make_model(args.hidden)
    if args.generator == "flow":
        guide = numpyro_ebm.flow_guide(
            "x", 2, k_guide, loc=data.mean(0), scale=data.std(0), flow_layers=args.flow_layers
        )
        loss = numpyro_ebm.AdversarialEstimation(entropy="exact", alpha=0.1)
    else:
        net = numpyro_ebm.MLPGenerator(out_dim=2, hidden=args.hidden)
        guide = numpyro_ebm.generator_guide(net, 2, "x", k_guide)
        loss = numpyro_ebm.AdversarialEstimation(entropy="vera", langevin_steps=20,
                                                 langevin_step_size=3e-3, alpha=0.1)  # fmt: skip
    optim = numpyro_ebm.fce_optimizer(
        guide, ebm_lr=1e-3, flow_lr=3e-3, num_updates=args.num_updates
    )
    svi = SVI(model, guide, optim, loss=loss)
    result = svi.run(k_train, args.num_updates, data, progress_bar=False)
    numpyro_ebm.check_svi_result(result)
    return truth, data, test, model, guide, result.params


def evaluate(dataset, truth, data, test, model, guide, params, args, rng_key):
    E = jax.jit(numpyro_ebm.energy_fn(model, "x", model_args=(data,)))
    log_Z = float(numpyro_ebm.logz_quadrature(lambda x: E(params, x), -BOX, BOX, 400, dim=2))
    log_p_true = truth.log_prob(test)
    gap = float(jnp.mean(log_p_true + E(params, test) + log_Z))
    line = f"{dataset:<10s} EBM gap {gap:+.3f} nats"
    if args.generator == "flow":
        flow_gap = float(jnp.mean(log_p_true - guide.log_prob(params, test)))
        bound = numpyro_ebm.logz_lower_bound(rng_key, E, guide, params)
        line += (
            f" | flow gap {flow_gap:+.3f} | log Z {log_Z:.3f} (quadrature) >= "
            f"{float(bound.log_Z):.3f} +- {float(bound.stderr):.3f} (bound)"
        )
    print(line)
    k_gen, k_mala = jax.random.split(jax.random.fold_in(rng_key, 1))
    gen = numpyro_ebm.sample_generator(k_gen, guide, params, args.num_samples)
    mala = numpyro_ebm.sample_chains(
        k_mala,
        lambda x: -E(params, x),
        functools.partial(blackjax.mala, step_size=args.mala_step_size),
        gen,  # start at the generator's draws: a short chain corrects them towards the EBM
        args.mala_steps,
    ).positions
    g = jnp.linspace(-PLOT, PLOT, 200)
    grid = jnp.stack(jnp.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
    density = np.asarray(jnp.exp(-E(params, grid) - log_Z)).reshape(200, 200)
    return density, np.asarray(gen), np.asarray(mala)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-updates", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="adversarial.png")
    parser.add_argument("--generator", choices=("flow", "vera"), default="flow")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds")
    args = parser.parse_args(argv)
    args.hidden, args.flow_layers, args.num_train = (128, 128), 6, 20_000
    args.num_samples, args.mala_steps, args.mala_step_size = 2000, 100, 1e-2
    if args.smoke:
        args.num_updates, args.hidden, args.flow_layers = min(args.num_updates, 50), (16,), 2
        args.num_train, args.num_samples, args.mala_steps = 1000, 200, 10
    rng_key = jax.random.key(args.seed)
    fig, axes = plt.subplots(len(DATASETS), 3, figsize=(9, 3 * len(DATASETS)), squeeze=False)
    for i, dataset in enumerate(DATASETS):
        key = jax.random.fold_in(rng_key, i)
        truth, data, test, model, guide, params = train(dataset, args, key)
        density, gen, mala = evaluate(dataset, truth, data, test, model, guide, params, args, key)
        axes[i, 0].imshow(density, origin="lower", extent=(-PLOT, PLOT, -PLOT, PLOT))
        for ax, x in ((axes[i, 1], gen), (axes[i, 2], mala)):
            ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.5)
            ax.set_xlim(-PLOT, PLOT)
            ax.set_ylim(-PLOT, PLOT)
            ax.set_aspect("equal")
        axes[i, 0].set_ylabel(dataset)
    for ax, title in zip(axes[0], ("EBM density", "generator draws", "MALA draws of the EBM")):
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(args.out, dpi=80)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
