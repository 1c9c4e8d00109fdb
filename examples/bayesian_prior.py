r"""EBMs inside Bayesian models: a trained EBM as a prior, and an EBM as a likelihood.

**Part 1: a learned prior.** An MLP energy :math:`E_\theta` is trained by denoising score matching
on two-moons data, then used as the prior of a latent point observed with Gaussian noise:

.. math::

    z \sim \frac{e^{-E_\theta(z)}}{Z(\theta)}, \qquad y \mid z \sim \mathcal N(z, 0.3^2 I),
    \qquad p(z \mid y) \propto e^{-E_\theta(z)}\,\mathcal N(y \mid z, 0.3^2 I)

(:math:`Z(\theta)` is a constant of the posterior: never needed). The posterior is sampled by
NumPyro's NUTS, by ``MCMC(BlackJAXKernel(blackjax.nuts, adapt=True))`` and by
``MCMC(BlackJAXKernel(blackjax.mala, adapt=...))``, and compared with the exact posterior computed
on a grid: moments, MMD to exact draws, ESS per second.

**Part 2: an EBM likelihood.** The coupling :math:`J` of a 4x4 periodic Ising model, from 400
exact draws at :math:`J = 0.3`, with a :math:`\mathcal N(0, 1)` prior: the exact posterior (log
:math:`Z(J)` by enumeration of the :math:`2^{16}` states), the pseudo-likelihood posterior (no
:math:`Z`; :func:`numpyro_ebm.evaluation.likelihood.pseudo_log_likelihood`) by NUTS, and the naive
posterior that drops :math:`-N \log Z(J)`, which is wrong by hundreds of standard deviations.

Prints the tables; saves ``bayesian_prior.png``; with ``--results PATH`` writes a markdown snippet
(``benchmarks/results/bayesian.md``). Run: ``python examples/bayesian_prior.py`` (about 2-4 min
on a shared 2-core CPU).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import math
import os
import platform
import time

import blackjax
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.diagnostics import effective_sample_size
from numpyro.infer import MCMC, NUTS, SVI, init_to_value

import numpyro_ebm
from numpyro_ebm.datasets import two_moons
from numpyro_ebm.estimators.score_matching import DenoisingScoreMatching
from numpyro_ebm.evaluation.diagnostics import ess_per_second, mmd
from numpyro_ebm.evaluation.likelihood import heldout_log_likelihood, pseudo_log_likelihood
from numpyro_ebm.evaluation.partition import logz_exact
from numpyro_ebm.models import Ising

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NOISE = 0.3
Y_OBS = jnp.array([2.0, -0.3])  # near the tip of the lower moon: a curved posterior


# ----------------------------------------------------------------------------- the EBM prior


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


INIT = init_mlp(jax.random.key(0))


def ebm(data):
    """The EBM as a NumPyro model: an observed Unnormalized site, trained with SVI."""
    params = {k: numpyro.param(k, v) for k, v in INIT.items()}
    with numpyro.plate("data", data.shape[0], subsample_size=256):
        batch = numpyro.subsample(data, event_dim=1)
        numpyro.sample("x", numpyro_ebm.Unnormalized(lambda x: mlp(params, x), (2,)), obs=batch)


def prior_model(energy):
    """z ~ EBM prior, y ~ N(z, NOISE^2 I) observed."""

    def model(y):
        z = numpyro.sample("z", numpyro_ebm.Unnormalized(energy, (2,)))
        numpyro.sample("y", dist.Normal(z, NOISE).to_event(1), obs=y)

    return model


def grid_posterior(energy, y, half_width=2.0, n=301):
    g1 = np.linspace(float(y[0]) - half_width, float(y[0]) + half_width, n)
    g2 = np.linspace(float(y[1]) - half_width, float(y[1]) + half_width, n)
    X1, X2 = np.meshgrid(g1, g2, indexing="ij")
    pts = np.stack([X1, X2], -1).reshape(-1, 2)
    log_post = -np.asarray(jax.jit(energy)(jnp.asarray(pts)), np.float64) - 0.5 * np.sum(
        (pts - np.asarray(y)) ** 2, -1
    ) / NOISE**2
    w = np.exp(log_post - log_post.max())
    w /= w.sum()
    mean = w @ pts
    d = pts - mean
    cov = (d * w[:, None]).T @ d
    return dict(X1=X1, X2=X2, pts=pts, w=w, mean=mean, cov=cov, step=g1[1] - g1[0])


def exact_draws(grid, n, key):
    """Exact posterior draws: a grid cell by its probability, then uniform within the cell."""
    k1, k2 = jax.random.split(key)
    idx = np.asarray(jax.random.choice(k1, len(grid["w"]), (n,), p=jnp.asarray(grid["w"])))
    jitter = np.asarray(jax.random.uniform(k2, (n, 2), minval=-0.5, maxval=0.5))
    return grid["pts"][idx] + grid["step"] * jitter


def run_sampler(name, kernel, model, num_samples, seed):
    """Run twice with the same shapes: the first run includes compilation, the second is timed
    alone (steady-state ESS per second)."""
    # warmup = 300 adaptation steps for every sampler (BlackJAXKernel adapts within num_warmup)
    mcmc = MCMC(kernel, num_warmup=300,
                num_samples=num_samples, num_chains=4, chain_method="vectorized",
                progress_bar=False, jit_model_args=True)
    t0 = time.perf_counter()
    mcmc.run(jax.random.key(seed), Y_OBS)
    jax.block_until_ready(mcmc.get_samples())
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    mcmc.run(jax.random.key(seed + 100), Y_OBS)
    z = mcmc.get_samples(group_by_chain=True)["z"]
    jax.block_until_ready(z)
    second = time.perf_counter() - t0
    return np.asarray(z, np.float64), first, second


def part1(num_train_steps, rows):
    print("== Part 1: a trained EBM as a prior ==")
    data = two_moons().sample(jax.random.key(1), (4000,))
    t0 = time.perf_counter()
    svi = SVI(ebm, numpyro_ebm.no_guide, optax.adam(1e-3), loss=DenoisingScoreMatching(0.1))
    params = svi.run(jax.random.key(2), num_train_steps, data, progress_bar=False).params
    t_train = time.perf_counter() - t0
    test = two_moons().sample(jax.random.key(3), (5000,))
    ll = heldout_log_likelihood(ebm, params, test, "x", logz="quadrature", low=-6.0, high=6.0,
                                model_args=(data,))
    true_ll = float(two_moons().log_prob(test).mean())
    print(f"trained by DSM (sigma=0.1, {num_train_steps} steps) in {t_train:.1f}s; test log-lik "
          f"{float(ll.mean):.3f} +- {float(ll.stderr_data):.3f} nats (true density {true_ll:.3f})")

    E = numpyro_ebm.energy_fn(ebm, "x", model_args=(data,))

    def energy(z):
        return E(params, z)

    grid = grid_posterior(energy, Y_OBS)
    model = prior_model(energy)
    init = init_to_value(values={"z": Y_OBS})
    samplers = {
        "numpyro NUTS": (NUTS(model, init_strategy=init), 1000),
        "BlackJAXKernel(nuts, adapt)": (
            numpyro_ebm.BlackJAXKernel(blackjax.nuts, model=model, adapt={"num_steps": 300},
                                       init_strategy=init), 1000),
        "BlackJAXKernel(mala, adapt)": (
            numpyro_ebm.BlackJAXKernel(functools.partial(blackjax.mala, step_size=0.1),
                                       model=model, adapt={"num_steps": 300},
                                       init_strategy=init), 4000),
    }
    reference = exact_draws(grid, 1000, jax.random.key(9))
    null = float(mmd(exact_draws(grid, 1000, jax.random.key(10)), reference))
    m, c = grid["mean"], grid["cov"]
    print(f"{'':30s} {'mean z1':>8s} {'mean z2':>8s} {'sd z1':>7s} {'sd z2':>7s} {'corr':>6s} "
          f"{'MMD^2':>8s} {'min ESS':>8s} {'ESS/s':>8s} {'t (s)':>6s} {'t+jit':>6s}")
    print(f"{'exact (grid)':30s} {m[0]:8.3f} {m[1]:8.3f} {math.sqrt(c[0, 0]):7.3f} "
          f"{math.sqrt(c[1, 1]):7.3f} {c[0, 1] / math.sqrt(c[0, 0] * c[1, 1]):6.3f} "
          f"{null:8.5f}  (exact draws vs exact draws)")
    rows.append(("exact (grid)", m, c, null, None, None, None, None))
    draws = {}
    for seed, (name, (kernel, n)) in enumerate(samplers.items()):
        z, first, second = run_sampler(name, kernel, model, n, seed)
        flat = z.reshape(-1, 2)
        draws[name] = flat
        ess = effective_sample_size(z)
        rate = ess_per_second(np.swapaxes(z, 0, 1), second)
        sub = flat[np.linspace(0, len(flat) - 1, 1000).astype(int)]
        d = float(mmd(sub, reference))
        mean, cov = flat.mean(0), np.cov(flat.T)
        print(f"{name:30s} {mean[0]:8.3f} {mean[1]:8.3f} {math.sqrt(cov[0, 0]):7.3f} "
              f"{math.sqrt(cov[1, 1]):7.3f} {cov[0, 1] / math.sqrt(cov[0, 0] * cov[1, 1]):6.3f} "
              f"{d:8.5f} {ess.min():8.0f} {rate.min():8.0f} {second:6.2f} {first:6.2f}")
        rows.append((name, mean, cov, d, ess.min(), rate.min(), second, first))
    return dict(grid=grid, energy=energy, draws=draws, data=data, ll=float(ll.mean),
                true_ll=true_ll, t_train=t_train)


# ----------------------------------------------------------------------------- the EBM likelihood

L, J_TRUE, N_DATA = (4, 4), 0.3, 400
ISING = Ising(L)  # the lattice; parameters {"J": J, "h": 0} are passed explicitly


def part2():
    print("\n== Part 2: an EBM as a likelihood (Ising coupling J, 4x4 periodic, N = 400) ==")
    idx = np.arange(2**16)[:, None]
    configs = jnp.asarray(np.where((idx >> np.arange(16)) & 1, 1.0, -1.0).reshape(-1, *L))
    bonds_all = ISING.bond_sum(configs)  # sufficient statistic B(s)
    data = configs[jax.random.categorical(jax.random.key(0), J_TRUE * bonds_all, shape=(N_DATA,))]
    total = float(ISING.bond_sum(data).sum())
    grid = jnp.linspace(0.2, 0.4, 401)
    log_prior = dist.Normal(0.0, 1.0).log_prob(grid)
    log_Z = jax.vmap(lambda J: jax.scipy.special.logsumexp(J * bonds_all))(grid)
    exact = np.asarray(log_prior + grid * total - N_DATA * log_Z, np.float64)

    @jax.jit
    def pl_sum(J):
        energy = lambda s: ISING.energy({"J": J, "h": 0.0}, s)  # noqa: E731
        return pseudo_log_likelihood(energy, data).sum()

    pl = np.asarray(log_prior + jax.lax.map(pl_sum, grid), np.float64)

    def summary(log_post):
        w = np.exp(log_post - log_post.max())
        w /= w.sum()
        mean = float(w @ np.asarray(grid))
        return mean, math.sqrt(float(w @ (np.asarray(grid) - mean) ** 2)), w

    m_ex, sd_ex, w_ex = summary(exact)
    m_pl, sd_pl, w_pl = summary(pl)

    def pl_model(spins):
        J = numpyro.sample("J", dist.Normal(0.0, 1.0))
        energy = lambda s: ISING.energy({"J": J, "h": 0.0}, s)  # noqa: E731
        numpyro.factor("pseudo_likelihood", pseudo_log_likelihood(energy, spins, (-1, 1)).sum())

    def exact_model(spins):
        J = numpyro.sample("J", dist.Normal(0.0, 1.0))
        energy = lambda s: ISING.energy({"J": J, "h": 0.0}, s.reshape(-1, *L))  # noqa: E731
        log_Z = logz_exact(energy, 16, (-1, 1))
        numpyro.factor("log_lik", J * total - spins.shape[0] * log_Z)

    def naive_model(spins):
        J = numpyro.sample("J", dist.Normal(0.0, 1.0))
        numpyro.sample("spins", ISING.distribution({"J": J, "h": 0.0}), obs=spins)

    rows = [("exact posterior (grid, log Z by enumeration)", m_ex, sd_ex)]
    rows.append(("pseudo-likelihood posterior (grid)", m_pl, sd_pl))
    samples = {}
    for name, model, n in (("pseudo-likelihood, NUTS", pl_model, 1000),
                           ("exact log Z inside NUTS (logz_exact)", exact_model, 300),
                           ("naive (drops -N log Z(J)), NUTS", naive_model, 300)):
        mcmc = MCMC(NUTS(model), num_warmup=200, num_samples=n, progress_bar=False)
        t0 = time.perf_counter()
        mcmc.run(jax.random.key(1), data)
        J = np.asarray(mcmc.get_samples()["J"], np.float64)
        samples[name] = J
        rows.append((f"{name} [{time.perf_counter() - t0:.1f}s]", J.mean(), J.std()))
    print(f"{'':55s} {'mean J':>10s} {'sd J':>8s} {'(mean - exact)/sd_exact':>24s}")
    for name, mean, sd in rows:
        print(f"{name:55s} {mean:10.4f} {sd:8.4f} {(mean - m_ex) / sd_ex:24.1f}")
    return dict(grid=np.asarray(grid), w_ex=w_ex, w_pl=w_pl, samples=samples, rows=rows,
                total=total)


# ----------------------------------------------------------------------------- figure & report


def figure(p1, p2, out):
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.6))
    g = np.linspace(-4, 4, 300)
    X1, X2 = np.meshgrid(g, g, indexing="ij")
    pts = jnp.asarray(np.stack([X1, X2], -1).reshape(-1, 2))
    prior = np.exp(-np.asarray(jax.jit(p1["energy"])(pts), np.float64)).reshape(X1.shape)
    ax = axes[0]
    ax.contourf(X1, X2, prior, levels=20, cmap="Blues")
    lik = np.exp(-0.5 * ((X1 - float(Y_OBS[0])) ** 2 + (X2 - float(Y_OBS[1])) ** 2) / NOISE**2)
    ax.contour(X1, X2, lik, levels=4, colors="darkorange", linewidths=1)
    ax.plot(*np.asarray(Y_OBS), "x", color="darkorange", ms=10, mew=2, label="observed y")
    ax.set_title("learned EBM prior exp(-E) and likelihood N(y | z, 0.3²)")
    ax.legend(loc="lower left", fontsize=8)
    grid = p1["grid"]
    W = grid["w"].reshape(grid["X1"].shape)
    for ax, name in zip(axes[1:3], ["numpyro NUTS", "BlackJAXKernel(mala, adapt)"]):
        ax.contour(grid["X1"], grid["X2"], W, levels=8, colors="k", linewidths=0.8)
        z = p1["draws"][name]
        ax.scatter(z[::4, 0], z[::4, 1], s=2, alpha=0.3)
        ax.set_title(f"exact posterior (contours) vs {name}", fontsize=9)
        ax.set_xlim(float(Y_OBS[0]) - 1.5, float(Y_OBS[0]) + 1.5)
        ax.set_ylim(float(Y_OBS[1]) - 1.5, float(Y_OBS[1]) + 1.5)
    ax = axes[3]
    step = p2["grid"][1] - p2["grid"][0]
    ax.plot(p2["grid"], p2["w_ex"] / step, "k", label="exact (log Z by enumeration)")
    ax.plot(p2["grid"], p2["w_pl"] / step, "C1--", label="pseudo-likelihood")
    ax.hist(p2["samples"]["pseudo-likelihood, NUTS"], bins=40, density=True, alpha=0.3,
            color="C1", label="pseudo-likelihood, NUTS")
    ax.axvline(J_TRUE, color="gray", lw=0.8)
    naive = p2["samples"]["naive (drops -N log Z(J)), NUTS"].mean()
    ax.set_title(f"Ising coupling posterior (naive one sits at J ≈ {naive:.0f})", fontsize=9)
    ax.set_xlabel("J")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    print(f"saved {os.path.abspath(out)}")


def write_results(path, p1, rows, p2, num_train_steps):
    device = jax.devices()[0]
    lines = [
        "## EBMs in Bayesian models (examples/bayesian_prior.py)",
        "",
        f"Date: {datetime.date.today().isoformat()}. Machine: {platform.platform()}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible; JAX device "
        f"{device.platform}. Versions: jax {jax.__version__}, numpyro {numpyro.__version__}, "
        f"blackjax {blackjax.__version__}. The machine was shared with other jobs: times are "
        "indicative.",
        "",
        f"**Learned prior.** MLP 2-64-64-1 (swish) trained by DSM (sigma 0.1, {num_train_steps} "
        f"steps, {p1['t_train']:.0f} s) on two moons; test log-likelihood {p1['ll']:.3f} nats "
        f"(quadrature log Z) vs {p1['true_ll']:.3f} for the true density. Posterior of z given "
        f"y = ({float(Y_OBS[0]):.2f}, {float(Y_OBS[1]):.2f}), y ~ N(z, 0.3^2 I); 4 chains "
        "(vectorized); NUTS: 300 warmup + 1000 draws per chain; BlackJAXKernel: 300 adaptation "
        "+ 100 burn-in steps + 1000 (NUTS) or 4000 (MALA) draws per chain. ESS: "
        "NumPyro's multi-chain bulk ESS, minimum over the two coordinates; ESS/s over the second "
        "run (compiled; warmup/adaptation included); t+jit: the first run including compilation. MMD^2: unbiased, median "
        "bandwidth, 1000 draws vs 1000 exact grid draws (first row: exact vs exact, the noise "
        "level).",
        "",
        "| sampler | mean z1 | mean z2 | sd z1 | sd z2 | corr | MMD^2 | min ESS | ESS/s | t (s) "
        "| t+jit (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, mean, cov, d, ess, rate, second, first in rows:
        sd = np.sqrt(np.diag(cov))
        corr = cov[0, 1] / (sd[0] * sd[1])
        tail = (" | | | | |" if ess is None
                else f" | {ess:.0f} | {rate:.0f} | {second:.2f} | {first:.2f} |")
        lines.append(f"| {name} | {mean[0]:.3f} | {mean[1]:.3f} | {sd[0]:.3f} | {sd[1]:.3f} | "
                     f"{corr:.3f} | {d:.5f}" + tail)
    nuts_rate = rows[1][5]
    lines += ["", "| comparison | ESS/s ratio |", "|---|---|"]
    for name, *_, rate, _s, _f in rows[2:]:
        lines.append(f"| {name} vs numpyro NUTS | {rate / nuts_rate:.2f}x |")
    lines += [
        "",
        f"**EBM likelihood.** Ising coupling J of a 4x4 periodic lattice from {N_DATA} exact "
        f"draws at J = {J_TRUE}, prior N(0, 1).",
        "",
        "| posterior | mean J | sd J | (mean - exact) / sd_exact |",
        "|---|---|---|---|",
    ]
    m_ex, sd_ex = p2["rows"][0][1], p2["rows"][0][2]
    for name, mean, sd in p2["rows"]:
        lines.append(f"| {name} | {mean:.4f} | {sd:.4f} | {(mean - m_ex) / sd_ex:.1f} |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-updates", type=int, default=3000, help="DSM optimizer steps")
    parser.add_argument("--out", default="bayesian_prior.png")
    parser.add_argument("--results", default=None, help="write a markdown results snippet here")
    args = parser.parse_args()
    t0 = time.perf_counter()
    rows = []
    p1 = part1(args.num_updates, rows)
    p2 = part2()
    figure(p1, p2, args.out)
    if args.results:
        write_results(args.results, p1, rows, p2, args.num_updates)
    print(f"total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    from numpyro_ebm import enable_compilation_cache

    enable_compilation_cache()  # reruns load compiled programs (NUMPYRO_EBM_NO_CACHE=1: off)
    main()
