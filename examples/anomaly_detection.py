r"""Anomaly detection with energies: AUROC of :math:`E_\theta(x)` as the anomaly score, side by side
with scikit-learn's ``IsolationForest`` and ``GaussianMixture`` log-likelihood on the same split.

* **Digits, one class normal** (for each of the 10 classes): train on the normal class of the
  training split (pixels / 16; fixed 80/20 split, ``random_state=0``); test on the held-out normal
  digits vs all other test digits as anomalies. The 10 EBMs (MLP 64-128-128-1, swish) are trained
  by denoising score matching through ``SVI.update``, ``vmap``-ed over the classes: one compiled
  program (each class is cut to the size of the smallest one so the shapes agree).
* **Two moons with outliers**: train on 2000 inliers of ``numpyro_ebm.datasets.two_moons``; test
  on 1000 new inliers and 100 uniform outliers from the box [-4, 4] x [-3, 3.5] (kept only where
  the true density is below the inliers' 1% quantile, so they are outliers by construction).

The energy needs no log Z for ranking. Prints the AUROC table; saves ``anomaly_detection.png``.

    python examples/anomaly_detection.py           # about 1-2 minutes on a laptop CPU
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
from numpyro.contrib.module import flax_module
from numpyro.infer import SVI

import numpyro_ebm
from numpyro_ebm.applications import anomaly_scores
from numpyro_ebm.datasets import two_moons
from numpyro_ebm.estimators import no_guide
from numpyro_ebm.estimators.score_matching import DenoisingScoreMatching
from numpyro_ebm.evaluation import auroc
from numpyro_ebm.nets import MLPEnergy


def make_model(dim, hidden, batch_size):
    def model(data):
        net = flax_module("energy", MLPEnergy(hidden=(hidden, hidden)), input_shape=(1, dim))
        with numpyro.plate("data", data.shape[0], subsample_size=min(batch_size, data.shape[0])):
            batch = numpyro.subsample(data, event_dim=1)
            numpyro.sample("x", numpyro_ebm.Unnormalized(net, (dim,)), obs=batch)

    return model


def train_energies(key, datasets, sigma, steps, hidden=128, batch_size=128, lr=1e-3):
    """Train one EBM per row of ``datasets`` ``(M, N, D)`` by DSM, vmapped; returns
    ``energy(m, x)`` and the training seconds."""
    dim = datasets.shape[-1]
    model = make_model(dim, hidden, batch_size)
    optim = optax.adam(optax.cosine_decay_schedule(lr, steps, 0.05))
    svi = SVI(model, no_guide, optim, loss=DenoisingScoreMatching(sigma))

    def train_one(key, data):
        state = svi.init(key, data)
        state, _ = jax.lax.scan(lambda s, _: svi.update(s, data), state, None, length=steps)
        return svi.get_params(state)

    t0 = time.perf_counter()
    keys = jax.random.split(key, datasets.shape[0])
    params = jax.jit(jax.vmap(train_one))(keys, datasets)
    jax.block_until_ready(params)
    seconds = time.perf_counter() - t0
    E = numpyro_ebm.energy_fn(model, "x", model_args=(datasets[0],))

    def energy(m, x):
        return E(jax.tree.map(lambda p: p[m], params), x)

    return energy, seconds


def baseline_scores(x_train, x_test, seed=0):
    """Anomaly scores (higher = more anomalous) of the scikit-learn baselines."""
    from sklearn.ensemble import IsolationForest
    from sklearn.mixture import GaussianMixture

    iso = IsolationForest(n_estimators=200, random_state=seed).fit(x_train)
    gmm = GaussianMixture(
        n_components=2, covariance_type="full", reg_covar=1e-2, random_state=seed
    ).fit(x_train)
    return {"IsolationForest": -iso.score_samples(x_test), "GMM": -gmm.score_samples(x_test)}


def load_digits_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    return train_test_split(X, y, test_size=0.2, random_state=0)


def digits_table(seed=0, sigma=0.1, steps=1000):
    """Per-class AUROC of the EBM, IsolationForest and GMM; returns (rows, train seconds)."""
    x_train, x_test, y_train, y_test = load_digits_split()
    n_min = min(int((y_train == c).sum()) for c in range(10))
    per_class = jnp.stack([jnp.asarray(x_train[y_train == c][:n_min]) for c in range(10)])
    energy, seconds = train_energies(jax.random.key(seed), per_class, sigma, steps)
    rows = []
    for c in range(10):
        normal = y_test == c
        scores = {"EBM (DSM)": np.asarray(anomaly_scores(partial(energy, c), jnp.asarray(x_test)))}
        scores.update(baseline_scores(np.asarray(per_class[c]), x_test, seed))
        rows.append(
            {name: float(auroc(s[normal], s[~normal])) for name, s in scores.items()} | {"class": c}
        )
    return rows, seconds


def moons_split(seed=0, num_train=2000, num_inliers=1000, num_outliers=100):
    moons = two_moons()
    k_train, k_test, k_out = jax.random.split(jax.random.key(seed + 100), 3)
    train = moons.sample(k_train, (num_train,))
    inliers = moons.sample(k_test, (num_inliers,))
    threshold = jnp.quantile(moons.log_prob(inliers), 0.01)
    box = jax.random.uniform(k_out, (20 * num_outliers, 2), minval=jnp.array([-4.0, -3.0]),
                             maxval=jnp.array([4.0, 3.5]))
    outliers = box[np.asarray(moons.log_prob(box) < threshold)][:num_outliers]
    return train, inliers, outliers


def moons_table(seed=0, sigma=0.1, steps=2000):
    train, inliers, outliers = moons_split(seed)
    energy, seconds = train_energies(jax.random.key(seed), train[None], sigma, steps, hidden=128,
                                     batch_size=256)
    x_test = jnp.concatenate([inliers, outliers])
    scores = {"EBM (DSM)": np.asarray(anomaly_scores(partial(energy, 0), x_test))}
    scores.update(baseline_scores(np.asarray(train), np.asarray(x_test), seed))
    scores["true density"] = -np.asarray(two_moons().log_prob(x_test))
    n = inliers.shape[0]
    row = {name: float(auroc(s[:n], s[n:])) for name, s in scores.items()}
    return row, seconds, (train, inliers, outliers, partial(energy, 0))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="anomaly_detection.png")
    args = parser.parse_args()

    rows, t_digits = digits_table(args.seed)
    methods = ["EBM (DSM)", "IsolationForest", "GMM"]
    print(f"digits, one class normal (EBMs trained in {t_digits:.1f} s, 10 classes vmapped)")
    print("class  " + "  ".join(f"{m:>16}" for m in methods))
    for r in rows:
        print(f"{r['class']:>5}  " + "  ".join(f"{r[m]:16.3f}" for m in methods))
    means = {m: np.mean([r[m] for r in rows]) for m in methods}
    print(" mean  " + "  ".join(f"{means[m]:16.3f}" for m in methods))

    row, t_moons, (train, inliers, outliers, energy) = moons_table(args.seed)
    print(f"\ntwo moons + uniform outliers (EBM trained in {t_moons:.1f} s)")
    for name, value in row.items():
        print(f"  {name:<16} AUROC {value:.3f}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    g = jnp.stack(jnp.meshgrid(jnp.linspace(-4, 4, 200), jnp.linspace(-3, 3.5, 200)), -1)
    axes[0].contourf(g[..., 0], g[..., 1], -energy(g.reshape(-1, 2)).reshape(200, 200), 30,
                     cmap="viridis")
    axes[0].scatter(*inliers[:300].T, s=3, c="w", label="inliers")
    axes[0].scatter(*outliers.T, s=12, c="r", marker="x", label="outliers")
    axes[0].set(title=f"two moons: -E(x), EBM AUROC {row['EBM (DSM)']:.3f}")
    axes[0].legend(loc="lower left", fontsize=8)
    width = 0.27
    for i, m in enumerate(methods):
        axes[1].bar(np.arange(10) + (i - 1) * width, [r[m] for r in rows], width, label=m)
    axes[1].set(xticks=range(10), xlabel="normal class", ylabel="AUROC", ylim=(0.5, 1.0),
                title="digits: one class normal, the rest anomalous")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"saved {args.out}")


if __name__ == "__main__":
    from numpyro_ebm import enable_compilation_cache

    enable_compilation_cache()  # reruns load compiled programs (NUMPYRO_EBM_NO_CACHE=1: off)
    main()
