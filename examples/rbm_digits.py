"""An RBM on binarized digits, trained with CD-1 through ``numpyro.infer.SVI``.

Prints the exact test log-likelihood per image (log Z by enumerating the 2**16 hidden states) and
saves three figures: samples from the model (block Gibbs), the learned filters (columns of W) and
the test log-likelihood during training.

    python examples/rbm_digits.py --out-prefix rbm_digits
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from numpyro.infer import SVI  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from numpyro_ebm import ContrastiveDivergence, no_guide  # noqa: E402
from numpyro_ebm.models import RBM  # noqa: E402


def grid(images, rows, cols, title, path):
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.8, rows * 0.8 + 0.4))
    for ax, img in zip(axes.ravel(), images):
        ax.imshow(np.asarray(img).reshape(8, 8), cmap="gray_r" if img.min() >= 0 else "RdBu_r",
                  interpolation="nearest")
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"saved {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--num-updates", type=int, default=2000)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--num-steps", type=int, default=1000,
                        help="block Gibbs sweeps of the sampling chains")
    parser.add_argument("--out-prefix", default="rbm_digits")
    args = parser.parse_args()

    X, _ = load_digits(return_X_y=True)
    X = (X > 7).astype(np.float32)
    Xtr, Xte = train_test_split(X, test_size=0.2, random_state=0)
    data, test = jnp.asarray(Xtr), jnp.asarray(Xte)

    # The model: an Unnormalized site over v with the RBM's free energy; CD-1 with the site's own
    # sampler (kernel=None: the RBM's block Gibbs kernel under the current parameters).
    rbm = RBM(64, args.hidden)
    svi = SVI(rbm.model, no_guide, optax.sgd(0.2),
              loss=ContrastiveDivergence(None, num_steps=1))
    state = svi.init(jax.random.key(0), data, subsample_size=20)

    @jax.jit
    def train_chunk(state):
        return jax.lax.fori_loop(
            0, args.eval_every, lambda i, s: svi.update(s, data, subsample_size=20)[0], state)

    @jax.jit
    def test_ll(params):
        return rbm.log_likelihood(params, test).mean()

    t0 = time.perf_counter()
    updates, curve = [0], [float(test_ll(rbm.get_params(svi.get_params(state))))]
    for _ in range(args.num_updates // args.eval_every):
        state = train_chunk(state)
        updates.append(updates[-1] + args.eval_every)
        curve.append(float(test_ll(rbm.get_params(svi.get_params(state)))))
    params = rbm.get_params(svi.get_params(state))
    print(f"RBM H={args.hidden}, CD-1, {args.num_updates} updates of 20 images: exact test "
          f"log-likelihood {curve[-1]:.3f} nats/image ({time.perf_counter() - t0:.1f} s)")

    # Samples: 64 chains, block Gibbs sweeps; show p(v | h) of the last h.
    res = rbm.sample(jax.random.key(1), params, num_chains=64, num_steps=args.num_steps)
    probs = rbm.visible_probabilities(params, res.state.hidden)
    grid(probs, 8, 8, f"RBM samples: p(v | h) after {args.num_steps} Gibbs sweeps",
         f"{args.out_prefix}_samples.png")
    W = np.asarray(params["W"]).T
    cols = min(8, args.hidden)
    grid(W, -(-args.hidden // cols), cols, "learned filters (columns of W)",
         f"{args.out_prefix}_filters.png")

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(updates, curve, marker=".")
    ax.axhline(-20.5, color="gray", ls="--", lw=0.8, label="-20.5 nats")
    ax.set_xlabel("SVI updates (CD-1, batch 20)")
    ax.set_ylabel("exact test log-likelihood (nats/image)")
    ax.set_ylim(max(min(curve), -45), max(curve) + 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(f"{args.out_prefix}_ll.png", dpi=100)
    plt.close(fig)
    print(f"saved {args.out_prefix}_ll.png")


if __name__ == "__main__":
    from numpyro_ebm import enable_compilation_cache

    enable_compilation_cache()  # reruns load compiled programs (NUMPYRO_EBM_NO_CACHE=1: off)
    main()
