"""Every estimator on the 2-D toy densities: test NLL gap to the truth and wall time.

Each cell trains the same MLP energy (2 -> 128 -> 128 -> 1, swish; Flax through
``numpyro.contrib.module.flax_module``) on the same ``--num-train`` exact draws of a toy density
with one estimator, in NumPyro's ``SVI`` (``svi.update`` scanned in compiled chunks, so a time
budget ``--seconds`` can stop it between chunks), and reports

    gap = mean_test [log p_true(x) - log p_EBM(x)],    log p_EBM = -E - log Z_quadrature,

the KL divergence from the truth estimated on ``--num-test`` fresh draws (0 is perfect; equal in
expectation to test NLL minus the true entropy, paired so that its Monte Carlo error is small),
with ``log Z`` by ``numpyro_ebm.logz_quadrature`` on a grid over ``[-6, 6]^2``. NCE and FCE also
report the self-normalized gap (their learned ``log_Z`` instead of quadrature), and FCE and
adversarial training with a flow (``ADV-flow``) their flow's gap; ``ADV-flow`` also reports its
variational lower bound on ``log Z`` against quadrature. ``ADV-VERA`` trains against an MLP
generator ``x = g(z) + sigma eps`` (no density: no generator gap). Wall time counts compilation and training, not evaluation.

Cells are cached as JSON (``--cache-dir``), so they can run one at a time:

    python benchmarks/toy_density.py --estimators FCE --datasets rings
    python benchmarks/toy_density.py --report-only      # table + figure from the cache

Writes benchmarks/results/toy_density.md and benchmarks/results/toy_density.png.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

ESTIMATORS = (
    "CD", "CD-D", "CD-MALA-D", "PCD", "PCD-D", "PCD-ANNEAL-D", "PCD-PT", "SM", "SM-D", "SSM", "SSM-D", "DSM", "DSM-D", "NCSM-D",
    "NCE", "NCE-D", "FCE", "FCE-D", "ADV-flow", "ADV-flow-D", "ADV-VERA", "ADV-VERA-D",
)  # fmt: skip
# row labels of the table (default: the estimator's key; a "-D" row: its base row's label and
# ", default net")
LABELS = {
    "PCD-PT": "PCD + PT(MALA) negatives, default net",
    "CD-MALA": "CD (MALA)",
    "PCD-ANNEAL": "PCD, annealed restarts",
    "NCSM": "noise-conditional DSM (annealed)",
    "ADV-flow": "adversarial (flow)",
    "ADV-VERA": "adversarial (VERA, MLP generator)",
}


def label(estimator: str) -> str:
    if estimator.endswith("-D"):
        base = estimator[:-2]
        return f"{LABELS.get(base, base)}, default net"
    return LABELS.get(estimator, estimator)


# estimators trained with numpyro_ebm.nets.default_energy() (Fourier features + confinement)
# instead of the plain MLP of every other row
# ("-D" rows: the estimator of the same name without "-D", with that network)
DEFAULT_NET = ("PCD-PT",) + tuple(e for e in ESTIMATORS if e.endswith("-D"))
DATASETS = (
    "eight_gaussians", "two_moons", "rings", "checkerboard", "pinwheel", "spirals",
    "twenty_five_gaussians",
)  # fmt: skip
BOX = 6.0  # quadrature box [-BOX, BOX]^2
NUM_POINTS = 600  # quadrature grid points per axis (spacing 0.02)
# datasets whose modes are narrower than the grid spacing: (grid points per axis on the same
# box, half-width of the data's own box). The box stays [-6, 6]^2: a learned density can put a
# spurious peak outside the data's box, which a smaller box would leave out of log Z, understating
# the gap (NCSM-D had one at (-4.3, -4.3)); the mass outside the data's box is recorded.
FINE_GRID = {"twenty_five_gaussians": (2400, 3.0)}  # spacing 0.005 vs mode std 0.0177
PLOT_BOX = 4.5
PLOT_POINTS = 200
BATCH = 256
# DSM learns the density smoothed by N(0, sigma^2): sigma ~ half the data's finest length scale.
DSM_SIGMA = {
    "eight_gaussians": 0.2, "two_moons": 0.1, "rings": 0.04, "checkerboard": 0.1,
    "pinwheel": 0.05, "spirals": 0.05, "twenty_five_gaussians": 0.008,
}  # fmt: skip
# PCD with parallel-tempering negatives (issue 11), each chain a PT ensemble over a geometric
# path from a broad Gaussian base. From the quickstart's PCD settings, two changed on 2026-12-03
# (checkerboard cell, one run each): lr 1e-3 -> 2e-3 took it from +0.101 to +0.093, 5 -> 4 MALA
# steps per update from 110 s to 92 s, both +0.090 in 103 s; every other density also improved
# or held (see the results' reading). Later on 2026-12-03: MALA's step per temperature,
# geometric from 0.5 at beta = 0 to 0.04 at beta = 1 (was 0.04 at every temperature, where the
# hot replicas, close to the N(0, 4^2) base, moved 0.28 a step) took twenty_five_gaussians from
# +0.233 to +0.141 and held checkerboard (+0.093) and rings (+0.059); from 2.0 instead:
# twenty_five_gaussians +0.126, but checkerboard +0.111 and rings +0.097
PCD_PT = {
    "num_updates": 2500, "lr": 2e-3, "step_size": 0.04, "hot_step_size": 0.5,
    "num_temperatures": 6, "base_scale": 4.0,
    "num_steps": 4, "num_chains": 64, "buffer_size": 4096, "reinit_prob": 0.02, "alpha": 0.1,
}  # fmt: skip
# CD-k from the data (Hinton 2002): ULA chains started at the minibatch
CD = {"num_updates": 3000, "num_steps": 20, "step_size": 3e-3, "alpha": 0.1}
# CD-k with MALA chains (numpyro_ebm.mala) instead of ULA: Metropolis-adjusted, so the true
# density is a fixed point of the update at any step (ULA's is biased by O(step)). Step 0.01 was
# the best of 1e-3 / 3e-3 / 0.01 / 0.03 on twenty_five_gaussians (2026-12-04, one run each)
CD_MALA = {"num_updates": 3000, "num_steps": 20, "step_size": 1e-2, "alpha": 0.1}
# PCD (Tieleman 2008) with ULA chains, a replay buffer and restarts from a uniform box. 40 steps
# per update since 2026-12-04 (was 20): rings +0.256 -> +0.185, checkerboard +0.101 -> +0.096 in
# 2750 updates within the 120-s budget on the AMD machine (a ULA step of 1e-3 instead: +0.247)
PCD = {
    "num_updates": 3000, "num_steps": 40, "step_size": 3e-3, "num_chains": 256,
    "buffer_size": 8192, "reinit_prob": 0.05, "alpha": 0.1,
}  # fmt: skip
# PCD whose restarted chains are first annealed from the uniform box to the model (short-run
# annealed chains, `anneal_steps`), with the PCD row's cost per update: 20 annealing + 20 steps
PCD_ANNEAL = {**PCD, "num_steps": 20, "anneal_steps": 20}

# noise-conditional DSM (issue 11, annealed training; Song and Ermon 2019): E(x, sigma) on a
# geometric ladder from sigma_max down to the DSM row's sigma; the cell scores E(x, sigma_min)
NCSM = {"num_updates": 15000, "lr": 1e-3, "sigma_max": 1.0, "num_sigmas": 8}

# adversarial training (issue 13): settings chosen by short tuning runs (see the report)
ADV_FLOW = {
    "num_updates": 16000, "ebm_lr": 1e-3, "flow_lr": 3e-3, "num_negatives": 256,
    "langevin_steps": 0, "langevin_step_size": 3e-3, "alpha": 0.1, "clip_norm": None,
}  # fmt: skip
ADV_VERA = {
    "num_updates": 5000, "ebm_lr": 1e-3, "generator_lr": 3e-3, "num_negatives": 256,
    "hidden": (128, 128), "latent_dim": 2, "langevin_steps": 20, "langevin_step_size": 3e-3,
    "alpha": 0.1,
}  # fmt: skip

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


# --------------------------------------------------------------------------------------------
# the model: one MLP energy for every estimator


def mlp(default_net=False, noise_conditional=False):
    from numpyro_ebm.nets import MLPEnergy, default_energy

    if default_net:
        return default_energy(noise_conditional=noise_conditional)
    return MLPEnergy(hidden=(128, 128), noise_conditional=noise_conditional)


def make_model(with_log_Z: bool, default_net: bool = False, sigmas=None):
    """The model of every row; ``sigmas``: a noise-conditional energy on that ladder (NCSM)."""
    import numpyro
    from numpyro.contrib.module import flax_module

    from numpyro_ebm.distribution import Unnormalized
    from numpyro_ebm.sampling.annealed_langevin import NoiseConditionalEnergy

    def model(data):
        energy = flax_module(
            "energy", mlp(default_net, sigmas is not None), input_shape=(1, 2)
        )
        if sigmas is not None:  # the site's energy(x) is E(x, sigma_min)
            energy = NoiseConditionalEnergy(energy, sigmas)
        log_Z = numpyro.param("log_Z", 0.0) if with_log_Z else None
        with numpyro.plate("data", data.shape[0], subsample_size=BATCH):
            batch = numpyro.subsample(data, event_dim=1)
            numpyro.sample("x", Unnormalized(energy, (2,), log_Z=log_Z), obs=batch)

    return model


def make_setup(name: str, dataset: str, data, steps: int | None, key):
    """(model, guide, optimizer, loss, num_steps, extra) for one estimator."""
    import numpyro.distributions as dist
    import optax
    from numpyro.optim import optax_to_numpyro

    from numpyro_ebm.estimators import (
        AdversarialEstimation,
        ContrastiveDivergence,
        DenoisingScoreMatching,
        FlowContrastiveEstimation,
        MLPGenerator,
        NoiseContrastiveEstimation,
        PersistentContrastiveDivergence,
        ScoreMatching,
        SlicedScoreMatching,
        fce_optimizer,
        flow_guide,
        generator_guide,
        no_guide,
    )
    from numpyro_ebm.sampling.langevin import ula

    def adam(lr, n):
        return optax_to_numpyro(optax.adam(optax.cosine_decay_schedule(lr, n, alpha=0.05)))

    default_net = name in DEFAULT_NET
    if name.endswith("-D"):
        name = name[:-2]
    mean, std = data.mean(0), data.std(0)
    cov = jnp.cov(data.T)
    box = dist.Uniform(-BOX + 1.5, BOX - 1.5).expand([2]).to_event(1)
    if name in ("CD", "CD-MALA"):
        from numpyro_ebm.sampling.mala import mala

        c, kernel = (CD, ula) if name == "CD" else (CD_MALA, mala)
        n = steps or c["num_updates"]
        loss = ContrastiveDivergence(
            partial(kernel, step_size=c["step_size"]), num_steps=c["num_steps"], alpha=c["alpha"]
        )
        return make_model(False, default_net), no_guide, adam(1e-3, n), loss, n, {}
    if name in ("PCD", "PCD-ANNEAL"):
        c = PCD if name == "PCD" else PCD_ANNEAL
        n = steps or c["num_updates"]
        loss = PersistentContrastiveDivergence(
            partial(ula, step_size=c["step_size"]), c["num_steps"], num_chains=c["num_chains"],
            buffer_size=c["buffer_size"], reinit_prob=c["reinit_prob"], init_dist=box,
            alpha=c["alpha"], anneal_steps=c.get("anneal_steps", 0),
        )  # fmt: skip
        return make_model(False, default_net), loss.guide, adam(1e-3, n), loss, n, {}
    if name == "PCD-PT":
        import blackjax

        from numpyro_ebm.sampling.tempering import parallel_tempering

        c = PCD_PT
        n = steps or c["num_updates"]
        K = c["num_temperatures"]
        # MALA's step per temperature slot, geometric from hot_step_size (beta = 0) to step_size
        steps_per_slot = jnp.geomspace(c["hot_step_size"], c["step_size"], K + 1)
        pt = partial(
            parallel_tempering, kernel=blackjax.mala, num_temperatures=K,
            base_scale=c["base_scale"], kernel_kwargs={"step_size": steps_per_slot},
        )  # fmt: skip
        loss = PersistentContrastiveDivergence(
            pt, c["num_steps"], num_chains=c["num_chains"], buffer_size=c["buffer_size"],
            reinit_prob=c["reinit_prob"], init_dist=box, alpha=c["alpha"],
        )  # fmt: skip
        return make_model(False, True), loss.guide, adam(c["lr"], n), loss, n, {}
    if name == "SM":
        n = steps or 10000
        return make_model(False, default_net), no_guide, adam(1e-3, n), ScoreMatching(), n, {}
    if name == "SSM":
        n = steps or 10000
        return make_model(False, default_net), no_guide, adam(1e-3, n), SlicedScoreMatching(), n, {}
    if name == "DSM":
        n = steps or 15000
        sigma = DSM_SIGMA[dataset]
        loss = DenoisingScoreMatching(sigma)
        return make_model(False, default_net), no_guide, adam(1e-3, n), loss, n, {"sigma": sigma}
    if name == "NCSM":
        from numpyro_ebm.sampling.annealed_langevin import geometric_sigmas

        c = NCSM
        n = steps or c["num_updates"]
        sigmas = geometric_sigmas(c["sigma_max"], DSM_SIGMA[dataset], c["num_sigmas"])
        model = make_model(False, default_net, sigmas)
        return model, no_guide, adam(c["lr"], n), DenoisingScoreMatching(), n, {"sigma": sigmas[-1]}
    if name == "NCE":
        n = steps or 5000
        noise = dist.MultivariateNormal(mean, 1.5**2 * cov)
        loss = NoiseContrastiveEstimation(noise, num_noise=4)
        return make_model(True, default_net), no_guide, adam(1e-3, n), loss, n, {}
    if name == "FCE":
        n = steps or 5000
        guide = flow_guide("x", 2, rng_key=key, flow="coupling-spline", loc=mean, scale=std)
        optim = fce_optimizer(guide, ebm_lr=1e-3, flow_lr=3e-4, num_updates=n)
        loss = FlowContrastiveEstimation(num_noise=1, flow_mle_weight=0.1)
        return make_model(True, default_net), guide, optim, loss, n, {"guide": guide}
    if name == "ADV-flow":
        n = steps or ADV_FLOW["num_updates"]
        guide = flow_guide("x", 2, rng_key=key, flow="coupling-spline", loc=mean, scale=std)
        optim = fce_optimizer(
            guide, ebm_lr=ADV_FLOW["ebm_lr"], flow_lr=ADV_FLOW["flow_lr"], num_updates=n,
            clip_norm=ADV_FLOW["clip_norm"],
        )  # fmt: skip
        loss = AdversarialEstimation(
            entropy="exact",
            num_negatives=ADV_FLOW["num_negatives"],
            langevin_steps=ADV_FLOW["langevin_steps"],
            langevin_step_size=ADV_FLOW["langevin_step_size"],
            alpha=ADV_FLOW["alpha"],
        )
        return make_model(False, default_net), guide, optim, loss, n, {"guide": guide, "bound": True}
    if name == "ADV-VERA":
        n = steps or ADV_VERA["num_updates"]
        gen = MLPGenerator(out_dim=2, hidden=ADV_VERA["hidden"])
        guide = generator_guide(gen, ADV_VERA["latent_dim"], "x", rng_key=key)
        optim = fce_optimizer(
            guide, ebm_lr=ADV_VERA["ebm_lr"], flow_lr=ADV_VERA["generator_lr"], num_updates=n
        )
        loss = AdversarialEstimation(
            entropy="vera",
            num_negatives=ADV_VERA["num_negatives"],
            langevin_steps=ADV_VERA["langevin_steps"],
            langevin_step_size=ADV_VERA["langevin_step_size"],
            alpha=ADV_VERA["alpha"],
        )
        return make_model(False, default_net), guide, optim, loss, n, {}
    raise ValueError(f"unknown estimator {name!r}; expected one of {ESTIMATORS}")


# --------------------------------------------------------------------------------------------
# one cell


def train(svi, data, num_steps, seconds, key, clock="wall", chunk=250):
    """``svi.update`` scanned ``chunk`` steps at a time until ``num_steps`` or ``seconds``: it
    stops before a chunk that would end past ``seconds`` (predicted by the slower of the last two).

    ``clock="cpu"`` measures the budget in this process's CPU time divided by the core count
    (the wall time an otherwise idle machine would take), for a machine shared with other jobs.
    Returns ``(state, losses, steps done, wall seconds, cpu seconds)``."""
    ncpu = os.cpu_count() or 1

    def elapsed():
        if clock == "cpu":
            return (time.process_time() - cpu0) / ncpu
        return time.perf_counter() - start

    from jax import lax

    @jax.jit
    def run_chunk(state, data):
        def body(s, _):
            return svi.update(s, data)

        return lax.scan(body, state, None, length=chunk)

    start, cpu0 = time.perf_counter(), time.process_time()
    state = svi.init(key, data)
    losses, done, chunk_times = [], 0, []
    while done < num_steps:
        before = elapsed()
        state, chunk_losses = run_chunk(state, data)
        chunk_losses = np.asarray(chunk_losses)
        losses.append(chunk_losses)
        done += chunk
        chunk_times.append(elapsed() - before)
        if not np.all(np.isfinite(chunk_losses)):
            break
        # stop when the next chunk would overrun the budget: the slower of the last two compiled
        # chunks predicts it (the first chunk's time includes compilation)
        steady = max(chunk_times[1:][-2:]) if len(chunk_times) > 1 else 0.0
        if seconds is not None and elapsed() + steady > seconds:
            break
    jax.block_until_ready(state)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    return state, np.concatenate(losses), done, wall, cpu


def run_cell(name, dataset, args):
    from numpyro.infer import SVI

    from numpyro_ebm import datasets
    from numpyro_ebm.energy import energy_fn
    from numpyro_ebm.evaluation.partition import logz_quadrature

    key = jax.random.key(args.seed)
    k_train, k_test, k_init, k_flow = jax.random.split(key, 4)
    truth = datasets.TOY_DENSITIES[dataset]()
    data = truth.sample(k_train, (args.num_train,))
    test = truth.sample(k_test, (args.num_test,))
    model, guide, optim, loss, num_steps, extra = make_setup(
        name, dataset, data, args.num_updates, k_flow
    )
    svi = SVI(model, guide, optim, loss=loss)
    state, losses, done, wall, cpu = train(
        svi, data, num_steps, args.seconds, k_init, clock=args.clock
    )
    params = svi.get_params(state)

    t0 = time.perf_counter()
    E = jax.jit(energy_fn(model, "x", model_args=(data,)))  # includes log_Z when learned
    log_p_true = truth.log_prob(test)
    energy_test = E(params, test)
    points, data_box = FINE_GRID.get(dataset, (NUM_POINTS, None))
    # a diverged run (training stops at its first non-finite chunk) has no log Z to compute
    trained = bool(np.all(np.isfinite(losses)))
    log_Z, outside = float("nan"), None
    if trained:
        log_Z = float(logz_quadrature(lambda x: E(params, x), -BOX, BOX, points, dim=2))
        if data_box is not None:  # the mass outside the data's box, at the same spacing
            inner_points = round(points * data_box / BOX)
            inner = float(logz_quadrature(lambda x: E(params, x), -data_box, data_box,
                                          inner_points, dim=2))
            outside = -math.expm1(inner - log_Z)
    per_point = log_p_true + energy_test + log_Z
    row = {
        "estimator": name,
        "dataset": dataset,
        "steps": int(done),
        "planned_steps": int(num_steps),
        "seconds": wall,
        "cpu_seconds": cpu,
        "ncpu": os.cpu_count() or 1,
        "final_loss": float(np.mean(losses[-100:])),
        "finite": trained and math.isfinite(log_Z),
        "gap": float(jnp.mean(per_point)),
        "test_nll": float(jnp.mean(energy_test) + log_Z),
        "gap_se": float(jnp.std(per_point) / math.sqrt(args.num_test)),
        "log_Z_quadrature": log_Z,
    }
    if "log_Z" in params:  # self-normalized: -E - log_Z with the learned log_Z (already in E)
        row["gap_self_normalized"] = float(jnp.mean(log_p_true + energy_test))
    if outside is not None:
        row["mass_outside_data_box"] = outside
    if "sigma" in extra:
        row["dsm_sigma"] = extra["sigma"]
    if "guide" in extra and row["finite"]:
        log_q = extra["guide"].log_prob(params, test)
        row["flow_gap"] = float(jnp.mean(log_p_true - log_q))
    if extra.get("bound") and row["finite"]:
        from numpyro_ebm.estimators import logz_lower_bound

        bound = logz_lower_bound(jax.random.fold_in(k_test, 1), E, extra["guide"], params)
        row["log_Z_bound"] = float(bound.log_Z)
        row["log_Z_bound_se"] = float(bound.stderr)
    # densities for the figure
    g = jnp.linspace(-PLOT_BOX, PLOT_BOX, PLOT_POINTS)
    grid = jnp.stack(jnp.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
    density = jnp.exp(-E(params, grid) - log_Z).reshape(PLOT_POINTS, PLOT_POINTS)
    row["eval_seconds"] = time.perf_counter() - t0
    return row, np.asarray(density)


def truth_density(dataset):
    from numpyro_ebm import datasets

    g = jnp.linspace(-PLOT_BOX, PLOT_BOX, PLOT_POINTS)
    grid = jnp.stack(jnp.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
    return np.asarray(jnp.exp(datasets.TOY_DENSITIES[dataset]().log_prob(grid))).reshape(
        PLOT_POINTS, PLOT_POINTS
    )


def true_entropy(dataset, seed=0):
    from numpyro_ebm import datasets

    h, se = datasets.entropy(datasets.TOY_DENSITIES[dataset](), jax.random.key(seed), 200_000)
    return float(h), float(se)


# --------------------------------------------------------------------------------------------
# report


def cell_path(cache_dir, name, dataset):
    return os.path.join(cache_dir, f"{name}__{dataset}")


def load_cells(cache_dir):
    rows = {}
    for e in ESTIMATORS:
        for d in DATASETS:
            p = cell_path(cache_dir, e, d) + ".json"
            if os.path.exists(p):
                with open(p) as f:
                    rows[e, d] = json.load(f)
    return rows


def fmt_cell(row):
    if row is None:
        return "—"
    times = f"({row['seconds']:.0f} / {row.get('cpu_seconds', float('nan')):.0f} s)"
    if not row["finite"]:
        return f"diverged {times}"
    return f"{row['gap']:+.3f} {times}"


def machine():
    try:
        nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    except OSError:
        nproc = str(os.cpu_count())
    return f"{platform.platform()}, {platform.processor() or platform.machine()}, nproc={nproc}"


def report(cache_dir, args):
    rows = load_cells(cache_dir)
    header = "| estimator | " + " | ".join(DATASETS) + " |"
    sep = "|---" * (len(DATASETS) + 1) + "|"
    lines = [header, sep]
    for e in ESTIMATORS:
        if not any((e, d) in rows for d in DATASETS):
            continue  # a row not run (into this cache)
        cells = " | ".join(fmt_cell(rows.get((e, d))) for d in DATASETS)
        lines.append(f"| {label(e)} | " + cells + " |")
    entropies = {d: true_entropy(d) for d in DATASETS}
    lines.append(
        "| *true entropy H (nats)* | "
        + " | ".join(f"{entropies[d][0]:.3f} ± {entropies[d][1]:.3f}" for d in DATASETS)
        + " |"
    )
    table = "\n".join(lines)
    extra = ["| cell | steps done / planned | gap ± se | test NLL − H | self-normalized gap | "
             "flow gap | log Z bound − quadrature | load |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for (e, d), r in sorted(rows.items()):
        sn = f"{r['gap_self_normalized']:+.3f}" if "gap_self_normalized" in r else ""
        fg = f"{r['flow_gap']:+.3f}" if "flow_gap" in r else ""
        lb = (
            f"{r['log_Z_bound'] - r['log_Z_quadrature']:+.3f} ± {r['log_Z_bound_se']:.3f}"
            if "log_Z_bound" in r
            else ""
        )
        extra.append(
            f"| {e} / {d} | {r['steps']} / {r['planned_steps']} | {r['gap']:+.3f} ± "
            f"{r['gap_se']:.3f} | {r['test_nll'] - entropies[d][0]:+.3f} | {sn} | {fg} | {lb} | "
            f"{r.get('load', '')} |"
        )
    print(table)
    print()
    print("\n".join(extra))
    misses = [f"{e}/{d}" for (e, d), r in rows.items() if not (r["finite"] and r["gap"] <= 0.1)]
    slow = [f"{e}/{d}" for (e, d), r in rows.items() if r["seconds"] > 120]
    md = [
        "## Toy densities: test NLL gap of every estimator (benchmarks/toy_density.py)",
        "",
        f"Date {datetime.date.today().isoformat()}; machine: {machine()}.",
        "Same MLP energy (2→128→128→1, swish, Flax) for every row except "
        + ", ".join(DEFAULT_NET)
        + " (`numpyro_ebm.nets.default_energy()`: the same MLP on the point and 64 random "
        "Fourier features, plus a confining |x|² term), same data "
        f"({args.num_train} train / {args.num_test} test exact draws), batch {BATCH}, "
        "Adam with cosine decay. Cell: gap in nats = mean over test draws of "
        "log p_true − log p_EBM (KL from the truth; test NLL − true entropy, paired), "
        "log Z by `logz_quadrature` on [−6, 6]² (600² points; twenty_five_gaussians, whose modes "
        "have std 0.018: the same box with 2400² points; cells run before 2026-12-03 16:37 "
        "UTC: [−3, 3]², 1200² points); in parentheses (wall s / CPU s) of "
        "compile + training, with a budget of "
        f"{args.seconds:g} s ({args.clock} clock): training stops before a chunk of 250 updates "
        "that would end past it. "
        "Cells run one at a time with no other job on the machine; the load column is the "
        "1-minute load average at the cell's start, which includes the previous cell of the "
        "same run (hence up to ~1.8 on an otherwise idle machine).",
        "",
        table,
        "",
        "\n".join(extra),
        "",
        "Targets (issues 11 and 13): every density within 0.1 nats for at least three "
        "estimators, PCD with PT negatives within 0.1 on the first four, no cell worse than 0.2, "
        "each cell under 120 s on 2 idle cores; adversarial rows within 0.1 on eight_gaussians "
        "and two_moons. Gap above 0.1 nats: "
        + (", ".join(sorted(misses)) if misses else "none")
        + ". Over 120 s wall: "
        + (", ".join(sorted(slow)) if slow else "none")
        + ".",
        "",
    ]
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "toy_density.md"), "w") as f:
        f.write("\n".join(md))
    figure(cache_dir, rows)


def figure(cache_dir, rows, path=None):
    """The densities of every cell in ``cache_dir`` beside the truth, a row per density, saved to
    ``path`` (default ``results/toy_density.png``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ("truth",) + tuple(e for e in ESTIMATORS if any((e, d) in rows for d in DATASETS))
    fig, axes = plt.subplots(
        len(DATASETS), len(cols), figsize=(2 * len(cols), 2 * len(DATASETS)), squeeze=False
    )
    for i, d in enumerate(DATASETS):
        for j, c in enumerate(cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(c)
            if j == 0:
                ax.set_ylabel(d)
            if c == "truth":
                dens = truth_density(d)
            else:
                p = cell_path(cache_dir, c, d) + ".npy"
                if not os.path.exists(p):
                    continue
                dens = np.load(p)
                r = rows.get((c, d))
                if r is not None:
                    ax.set_xlabel(f"{r['gap']:+.2f} nats", fontsize=8)
            ax.imshow(
                dens,
                origin="lower",
                extent=(-PLOT_BOX, PLOT_BOX, -PLOT_BOX, PLOT_BOX),
                cmap="viridis",
            )
    fig.tight_layout()
    fig.savefig(path or os.path.join(RESULTS, "toy_density.png"), dpi=80)
    plt.close(fig)


# --------------------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--estimators", default=",".join(ESTIMATORS))
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--num-updates", type=int, default=None, help="override every estimator's optimizer steps")
    parser.add_argument("--seconds", type=float, default=60.0, help="time budget per cell")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="budget clock: wall time, or process CPU time / cores (on a shared machine)",
    )
    parser.add_argument("--num-train", type=int, default=50_000)
    parser.add_argument("--num-test", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cache-dir", default=os.path.join(tempfile.gettempdir(), "numpyro_ebm_toy_density")
    )
    parser.add_argument("--report-only", action="store_true", help="only table + figure")
    parser.add_argument("--no-report", action="store_true", help="only run the cells")
    parser.add_argument("--figure-only", default=None, metavar="PATH",
                        help="only draw the cached cells' densities into PATH (no table)")
    args = parser.parse_args(argv)
    estimators = [e for e in args.estimators.split(",") if e]
    datasets_ = [d for d in args.datasets.split(",") if d]
    for e in estimators:
        if e not in ESTIMATORS:
            parser.error(f"--estimators: unknown {e!r}; expected some of {ESTIMATORS}")
    for d in datasets_:
        if d not in DATASETS:
            parser.error(f"--datasets: unknown {d!r}; expected some of {DATASETS}")
    os.makedirs(args.cache_dir, exist_ok=True)
    if args.figure_only:
        figure(args.cache_dir, load_cells(args.cache_dir), args.figure_only)
        return 0
    if not args.report_only:
        for d in datasets_:
            for e in estimators:
                load = os.getloadavg()[0]
                row, density = run_cell(e, d, args)
                row["load"] = round(load, 1)
                path = cell_path(args.cache_dir, e, d)
                np.save(path + ".npy", density)
                with open(path + ".json", "w") as f:
                    json.dump(row, f)
                print(json.dumps(row), flush=True)
    if not args.no_report:
        report(args.cache_dir, args)


if __name__ == "__main__":
    sys.exit(main())
