r"""Classification of scikit-learn digits with a conditional energy :math:`E_\theta(y, x)`.

The energy network has one output per class, :math:`E_\theta(y, x) = f_\theta(x)_y` (MLP
64-128-128-10, swish). The label is an observed ``Unnormalized`` site over {0..9}
(:func:`numpyro_ebm.label_ebm`), ``x`` is the conditioning input (a model argument):

1. **Conditional EBM**, trained by exact conditional maximum likelihood
   (:class:`numpyro_ebm.ConditionalMaximumLikelihood`: the negative phase enumerated over the 10
   labels) through NumPyro's ``SVI``; prediction by minimum energy.
2. **JEM** (Grathwohl et al. 2019): the same logits also define
   :math:`E_\theta(x) = -\log\sum_y e^{-f_\theta(x)_y}`, a second observed site trained by
   persistent contrastive divergence with the JEM stabilizers (SGLD with a small step and
   decoupled noise, replay buffer with 5% restarts from uniform noise, energy penalty ``alpha``),
   combined with the conditional likelihood by :class:`numpyro_ebm.CombinedLoss`.
3. Baseline: scikit-learn ``LogisticRegression`` on the same split.

Data: pixels / 16 in [0, 1], fixed 80/20 split (``random_state=0``). Prints the accuracies;
saves ``classify_digits.png`` (test energies of a few digits, and JEM's replay-buffer samples).

    python examples/classify_digits.py             # about 1-2 minutes on a laptop CPU
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.contrib.module import flax_module
from numpyro.infer import SVI

import numpyro_ebm
from numpyro_ebm.applications import predict_min_energy
from numpyro_ebm.estimators import (
    CombinedLoss,
    ConditionalMaximumLikelihood,
    PersistentContrastiveDivergence,
    joint_energy,
    label_ebm,
    label_energies,
    no_guide,
)

DIM, NUM_CLASSES = 64, 10


class ClassEnergies(nn.Module):
    """``f(x)``: ``(..., 64) -> (..., 10)``, one energy per class."""

    hidden: int = 128

    @nn.compact
    def __call__(self, x):
        x = nn.swish(nn.Dense(self.hidden)(x))
        x = nn.swish(nn.Dense(self.hidden)(x))
        return nn.Dense(NUM_CLASSES)(x)


def conditional_model(x, y=None, batch_size=128):
    net = flax_module("energy", ClassEnergies(), input_shape=(1, DIM))
    with numpyro.plate("data", x.shape[0], subsample_size=batch_size):
        xb = numpyro.subsample(x, event_dim=1)
        yb = None if y is None else numpyro.subsample(y, event_dim=0)
        numpyro.sample("y", label_ebm(net(xb)), obs=yb)


def jem_model(x, y=None, batch_size=128):
    net = flax_module("energy", ClassEnergies(), input_shape=(1, DIM))
    with numpyro.plate("data", x.shape[0], subsample_size=batch_size):
        xb = numpyro.subsample(x, event_dim=1)
        yb = None if y is None else numpyro.subsample(y, event_dim=0)
        numpyro.sample("x", numpyro_ebm.Unnormalized(lambda v: joint_energy(net(v)), (DIM,)),
                       obs=xb)
        numpyro.sample("y", label_ebm(net(xb)), obs=yb)


def load_digits_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    return train_test_split(X, y.astype(np.int32), test_size=0.2, random_state=0)


def accuracy(model, params, x, y):
    table = label_energies(
        model, params, "y", model_args=(jnp.asarray(x),), model_kwargs={"batch_size": None}
    )
    return float((predict_min_energy(table) == jnp.asarray(y)).mean()), table


def train(model, loss, guide, key, steps, x, y, lr=1e-3):
    optim = optax.adam(optax.cosine_decay_schedule(lr, steps, 0.05))
    svi = SVI(model, guide, optim, loss=loss)
    t0 = time.perf_counter()
    result = svi.run(key, steps, jnp.asarray(x), jnp.asarray(y), progress_bar=False)
    jax.block_until_ready(result.params)
    return result, time.perf_counter() - t0


def run(seed=0, steps=2000, jem_steps=2000, verbose=True):
    from sklearn.linear_model import LogisticRegression

    x_train, x_test, y_train, y_test = load_digits_split()
    key_cml, key_jem = jax.random.split(jax.random.key(seed))

    # 1. conditional EBM, exact conditional likelihood
    result, t_cml = train(conditional_model, ConditionalMaximumLikelihood(), no_guide, key_cml,
                          steps, x_train, y_train)
    acc_cml, table = accuracy(conditional_model, result.params, x_test, y_test)

    # 2. JEM: PCD on x (SGLD, replay buffer, restarts, energy penalty) + exact p(y | x)
    box = dist.Uniform(0.0, 1.0).expand([DIM]).to_event(1)
    pcd = PersistentContrastiveDivergence(
        partial(numpyro_ebm.ula, step_size=1.0, noise_scale=0.01), num_steps=20, num_chains=128,
        buffer_size=2000, reinit_prob=0.05, init_dist=box, alpha=0.1,
    )
    jem = CombinedLoss(pcd, ConditionalMaximumLikelihood())
    result_jem, t_jem = train(jem_model, jem, pcd.guide, key_jem, jem_steps, x_train, y_train,
                              lr=1e-3)
    acc_jem, _ = accuracy(jem_model, result_jem.params, x_test, y_test)
    finite = bool(np.all(np.isfinite(np.asarray(result_jem.losses))))

    # 3. baseline
    lr = LogisticRegression(max_iter=5000).fit(x_train, y_train)
    acc_lr = float(lr.score(x_test, y_test))

    rows = [
        ("conditional EBM (exact conditional ML)", acc_cml, t_cml),
        ("JEM (PCD on x + exact p(y|x))", acc_jem, t_jem),
        ("LogisticRegression (scikit-learn)", acc_lr, float("nan")),
    ]
    if verbose:
        print(f"digits: {len(y_train)} train, {len(y_test)} test")
        print(f"{'model':<42} {'accuracy':>9} {'train (s)':>10}")
        for name, acc, sec in rows:
            print(f"{name:<42} {acc:9.4f} {sec:10.1f}")
        if not finite:
            print("warning: JEM training produced non-finite losses")
    buffer = result_jem.state.mutable_state["pcd_chains"]["*"]["positions"]
    return dict(rows=rows, table=table, y_test=y_test, buffer=buffer, jem_finite=finite)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-updates", type=int, default=2000)
    parser.add_argument("--jem-num-updates", type=int, default=2000)
    parser.add_argument("--out", default="classify_digits.png")
    args = parser.parse_args()
    r = run(args.seed, args.num_updates, args.jem_num_updates)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].imshow(np.asarray(r["table"][:20]), cmap="viridis_r", aspect="auto")
    axes[0].set(title="E(y, x) of 20 test digits (true class: red dot)", xlabel="y",
                ylabel="test digit", xticks=range(10))
    axes[0].scatter(np.asarray(r["y_test"][:20]), np.arange(20), c="r", s=10)
    buf = np.clip(np.asarray(r["buffer"][:64]), 0, 1).reshape(8, 8, 8, 8)
    axes[1].imshow(buf.transpose(0, 2, 1, 3).reshape(64, 64), cmap="gray_r")
    axes[1].set(title="JEM replay buffer (64 samples of p(x))", xticks=[], yticks=[])
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"saved {args.out}")


if __name__ == "__main__":
    from numpyro_ebm import enable_compilation_cache

    enable_compilation_cache()  # reruns load compiled programs (NUMPYRO_EBM_NO_CACHE=1: off)
    main()
