"""Inpainting binarized digits with an RBM: clamped block Gibbs vs nearest neighbour.

An RBM is trained with CD-1 (``numpyro.infer.SVI``) on 8x8 binarized digits. For each test digit
the top half (32 pixels) is known and the bottom half hidden; the bottom half is filled in by
sampling p(v_bottom | v_top) with ``numpyro_ebm.clamped_kernel`` (block Gibbs h | v, v | h with
the known pixels reset after every sweep: exact for the conditional), averaged over chains and
sweeps. Metric on the hidden half: pixel accuracy of the thresholded posterior mean and the
per-pixel log-loss of the posterior marginals, against two baselines: the nearest training digit
on the visible half (copy its bottom half) and the per-pixel training mean. Saves a figure.

Then a continuous EBM: the two-moons density (``datasets.two_moons``, exact energy) with the first
coordinate known and the second filled in by sampling the clamped density
``numpyro_ebm.clamp(log_prob, mask, values)`` (a random-walk Metropolis kernel of BlackJAX): the
sampled conditional mean and the held-out log-likelihood of the true second coordinate (a kernel
density estimate of the draws) against the exact conditional (1-D quadrature) and a 10-nearest-
neighbour baseline.

    python examples/inpainting.py --out inpainting.png
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import blackjax  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from numpyro.infer import SVI  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from numpyro_ebm import ContrastiveDivergence, clamp, clamped_kernel, no_guide  # noqa: E402
from numpyro_ebm.datasets import two_moons  # noqa: E402
from numpyro_ebm.models import RBM  # noqa: E402


def log_loss(probs, truth):
    p = np.clip(np.asarray(probs), 1e-4, 1 - 1e-4)
    t = np.asarray(truth)
    return float(-np.mean(t * np.log(p) + (1 - t) * np.log(1 - p)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--num-updates", type=int, default=4000)
    parser.add_argument("--num-chains", type=int, default=16)
    parser.add_argument("--num-burn", type=int, default=50)
    parser.add_argument("--num-steps", type=int, default=200)
    parser.add_argument("--out", default="inpainting.png")
    args = parser.parse_args()

    X, _ = load_digits(return_X_y=True)
    X = (X > 7).astype(np.float32)
    Xtr, Xte = train_test_split(X, test_size=0.2, random_state=0)
    data, test = jnp.asarray(Xtr), jnp.asarray(Xte)
    mask = np.arange(64) < 32  # True = known (clamped): the top four rows
    hidden_half = ~mask

    t0 = time.perf_counter()
    rbm = RBM(64, args.hidden)
    svi = SVI(rbm.model, no_guide, optax.sgd(0.1), loss=ContrastiveDivergence(None, num_steps=1))
    result = svi.run(jax.random.key(0), args.num_updates, data, subsample_size=20,
                     progress_bar=False)
    params = rbm.get_params(result.params)
    print(f"RBM H={args.hidden}, CD-1, {args.num_updates} updates ({time.perf_counter() - t0:.1f} s)")

    @jax.jit
    def inpaint(rng_key, v):
        """Posterior mean of the bottom half given the top half of ``v``, over chains and sweeps."""
        algorithm = clamped_kernel(rbm, params, mask, v)
        key_init, key_run = jax.random.split(rng_key)
        start = jax.random.bernoulli(key_init, 0.5, (args.num_chains, 64)).astype(jnp.float32)
        state = algorithm.init(start)  # the step takes the batch of chains directly

        def body(carry, key):
            state, total = carry
            state = algorithm.step(key, state)[0]
            return (state, total + state.position.mean(0)), None

        keys = jax.random.split(key_run, args.num_burn + args.num_steps)
        state = jax.lax.scan(lambda st, k: (algorithm.step(k, st)[0], None), state,
                             keys[: args.num_burn])[0]
        (_, total), _ = jax.lax.scan(body, (state, jnp.zeros(64)), keys[args.num_burn:])
        return total / args.num_steps

    t0 = time.perf_counter()
    keys = jax.random.split(jax.random.key(1), test.shape[0])
    probs = jax.block_until_ready(jax.vmap(inpaint)(keys, test))
    seconds = time.perf_counter() - t0
    assert bool(jnp.all(probs[:, mask] == test[:, mask]))  # the known half stays clamped

    # baselines: nearest training digit on the visible half; the per-pixel training mean
    dist = np.abs(np.asarray(test)[:, None, mask] - np.asarray(data)[None, :, mask]).sum(-1)
    nearest = np.asarray(data)[dist.argmin(1)]
    mean = np.broadcast_to(np.asarray(data).mean(0), test.shape)

    truth = np.asarray(test)[:, hidden_half]
    print(f"\n{test.shape[0]} test digits, bottom half (32 pixels) hidden")
    print(f"{'method':<34} {'pixel accuracy':>15} {'log-loss (nats/pixel)':>22}")
    rows = [
        ("RBM, clamped block Gibbs", np.asarray(probs)[:, hidden_half]),
        ("nearest neighbour (visible half)", nearest[:, hidden_half]),
        ("per-pixel training mean", mean[:, hidden_half]),
    ]
    for name, p in rows:
        acc = float(np.mean((p > 0.5) == (truth > 0.5)))
        print(f"{name:<34} {acc:>15.4f} {log_loss(p, truth):>22.4f}")
    print(f"(RBM inpainting: {args.num_chains} chains x {args.num_steps} sweeps per digit, "
          f"{seconds:.1f} s for all)")

    n = 10
    panels = [("truth", np.asarray(test[:n])), ("known half", np.where(mask, test[:n], 0.5)),
              ("RBM E[v | top]", np.asarray(probs[:n])), ("nearest neighbour", nearest[:n])]
    fig, axes = plt.subplots(len(panels), n, figsize=(n * 0.9, len(panels) * 1.0 + 0.3))
    for r, (title, imgs) in enumerate(panels):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(np.asarray(imgs[c]).reshape(8, 8), cmap="gray_r", vmin=0, vmax=1,
                      interpolation="nearest")
            ax.axis("off")
        axes[r, 0].set_title(title, fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"saved {args.out}")
    continuous_inpainting()


def kde_log_density(draws, y, bandwidth):
    """Gaussian kernel density estimate of ``draws`` ``(n,)`` at ``y``."""
    z = (y - draws) / bandwidth
    return jax.nn.logsumexp(-0.5 * z**2) - jnp.log(draws.size * bandwidth * jnp.sqrt(2 * jnp.pi))


def continuous_inpainting(num_test=200, num_chains=32, num_steps=400, num_burn=100):
    """Two moons: x_1 known, x_2 | x_1 sampled from the clamped exact energy."""
    moons = two_moons()
    train = moons.sample(jax.random.key(10), (2000,))
    test = moons.sample(jax.random.key(11), (num_test,))
    mask = np.array([True, False])  # the first coordinate is known
    grid = jnp.linspace(-4.0, 4.0, 4001)

    def exact(x):  # the exact conditional p(x_2 | x_1) on a grid: mean and the log density at x_2
        logp = moons.log_prob(jnp.stack([jnp.full_like(grid, x[0]), grid], -1))
        log_norm = jax.nn.logsumexp(logp) + jnp.log(grid[1] - grid[0])
        w = jnp.exp(logp - jax.nn.logsumexp(logp))
        return w @ grid, moons.log_prob(x) - log_norm

    @jax.jit
    def sample(rng_key, x):
        logdensity_fn = clamp(moons.log_prob, mask, x)  # density of the free coordinate, (1,)
        algorithm = blackjax.additive_step_random_walk(
            logdensity_fn, blackjax.mcmc.random_walk.normal(jnp.array([0.8])))
        key_init, key_run = jax.random.split(rng_key)
        state = jax.vmap(algorithm.init)(jax.random.normal(key_init, (num_chains, 1)))

        def body(state, key):
            state = jax.vmap(algorithm.step)(jax.random.split(key, num_chains), state)[0]
            return state, state.position[:, 0]

        _, draws = jax.lax.scan(body, state, jax.random.split(key_run, num_burn + num_steps))
        draws = draws[num_burn:].ravel()
        bandwidth = 1.06 * draws.std() * draws.size ** -0.2
        return draws.mean(), kde_log_density(draws, x[1], bandwidth)

    t0 = time.perf_counter()
    mean_exact, ll_exact = jax.vmap(exact)(test)
    mean_mcmc, ll_mcmc = jax.vmap(sample)(jax.random.split(jax.random.key(12), num_test), test)
    seconds = time.perf_counter() - t0
    # baseline: the second coordinates of the 10 training points nearest in the first
    nearest = jnp.argsort(jnp.abs(test[:, None, 0] - train[None, :, 0]), axis=1)[:, :10]
    neighbours = train[nearest, 1]
    mean_knn = neighbours.mean(1)
    ll_knn = jax.vmap(lambda d, y: kde_log_density(d, y, 1.06 * d.std() * 10 ** -0.2 + 1e-3))(
        neighbours, test[:, 1])
    print(f"\ntwo moons, x_1 known, x_2 filled in ({num_test} test points, {seconds:.1f} s)")
    print(f"{'method':<34} {'|E[x2|x1] - exact|':>19} {'held-out log-lik':>17}")
    print(f"{'exact conditional (quadrature)':<34} {0.0:>19.4f} {float(ll_exact.mean()):>17.3f}")
    for name, m, ll in (("clamped EBM, random-walk MH", mean_mcmc, ll_mcmc),
                        ("10 nearest neighbours in x_1", mean_knn, ll_knn)):
        print(f"{name:<34} {float(jnp.abs(m - mean_exact).mean()):>19.4f} "
              f"{float(ll.mean()):>17.3f}")


if __name__ == "__main__":
    main()
