"""Tempering benchmark: log Z accuracy per second (AIS, tempered SMC, PT stepping stones) and ESS
per second of the mode weights (MALA, HMC and their PT-wrapped versions) on the same targets.

**log Z** (``--part logz``), targets with exact log Z:

* ``mixture2d`` / ``mixture10d``: two unit Gaussians 12 sd apart, weights 0.3 / 0.7 (log Z = 0),
  geometric path from N(0, 8^2 I), MALA;
* ``ising``: a 4 x 4 periodic Ising model at beta = 0.6 (exact by enumeration), its own path
  (exact checkerboard Gibbs at every beta);
* ``rbm``: an RBM with V = 16, H = 8, W ~ N(0, 2^2) (exact by enumerating the hidden units):
  AIS and PT on the model's own path, SMC on the geometric path of the free energy with
  single-site Gibbs.

Each cell: ``--repeats`` runs; mean |error|, mean reported standard error, the fraction of runs
within 2 reported standard errors, seconds per run (after one compilation run), and
``|error| * sqrt(seconds)`` (lower is better: error times the square root of cost, a measure of
accuracy per second that does not depend on the budget for a sqrt(N) estimator).

**Sampling** (``--part sampling``): the separated 2-D mixture, chains started in the light mode;
the ESS per second of the indicator of the +6 mode (and of E[x_0]) for MALA, HMC, PT(MALA) and
PT(HMC), with ``numpyro_ebm.diagnostics`` (ArviZ-style ESS over chains), and the bias of the mode
weight. The same four on the learned rings EBM of ``examples/tempering.py`` (``train_rings_ebm``:
``default_energy()`` by NCE on ``datasets.rings()``), chains started on the innermost ring: the
ESS per second of the outermost ring's indicator and of x_0 (E[x_0] = 0 by symmetry), and the
bias of the ring weights against the data's and against the EBM's own (by quadrature).

Usage::

    python benchmarks/tempering.py --out benchmarks/results/tempering.md
    python benchmarks/tempering.py --tiny          # a smoke run: seconds, numbers meaningless
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import math
import os
import sys
import time

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from _machine import machine_info  # noqa: E402

import numpyro_ebm
from numpyro_ebm.models import RBM, Ising


def mixture(dim):
    mu = jnp.zeros(dim).at[0].set(6.0)

    def log_p(x):
        a = math.log(0.3) - 0.5 * jnp.sum((x - mu) ** 2)
        b = math.log(0.7) - 0.5 * jnp.sum((x + mu) ** 2)
        return jnp.logaddexp(a, b) - 0.5 * dim * math.log(2 * math.pi)

    return log_p, mu


def logz_targets(tiny):
    """``name -> (exact, {estimator: (energy or path, base, kernel)})``."""
    targets = {}
    for dim in (2, 10):
        log_p, _ = mixture(dim)
        energy = functools.partial(lambda lp, x: -lp(x), log_p)
        base = dist.Normal(0.0, 8.0).expand([dim]).to_event(1)
        kernel = functools.partial(blackjax.mala, step_size=0.8 if dim == 2 else 0.5)
        spec = (energy, base, kernel)
        targets[f"mixture{dim}d"] = (0.0, {"ais": spec, "smc": spec, "pt": spec})
        if tiny:
            break
    ising = Ising((4, 4))
    params = ising.init_params(beta=0.6)
    path = ising.annealing_path(params)
    targets["ising"] = (float(ising.log_partition(params)),
                        {k: (path, None, None) for k in ("ais", "smc", "pt")})
    rbm = RBM(16, 8)
    p = rbm.init_params(jax.random.key(0))
    p = {**p, "W": 2.0 * jax.random.normal(jax.random.key(1), p["W"].shape)}
    rbm_path = rbm.annealing_path(p)
    geometric = (functools.partial(rbm.energy, p), dist.Bernoulli(logits=jnp.zeros(16)).to_event(1),
                 functools.partial(numpyro_ebm.gibbs, values=(0, 1)))
    targets["rbm"] = (float(rbm.log_partition(p)),
                      {"ais": (rbm_path, None, None), "smc": geometric, "pt": (rbm_path, None, None)})
    return targets


def run_estimator(name, key, spec, budget):
    target, base, kernel = spec
    if name == "ais":
        return numpyro_ebm.logz_ais(key, target, base, kernel, num_chains=budget["chains"],
                                    num_temperatures=budget["ais_temperatures"])
    if name == "smc":
        return numpyro_ebm.logz_smc(key, target, base, kernel, num_particles=budget["particles"],
                                    num_runs=4, num_steps=budget["smc_steps"])
    return numpyro_ebm.logz_stepping_stone(
        key, target, base, kernel, num_chains=budget["pt_chains"],
        num_temperatures=budget["pt_temperatures"], num_steps=budget["pt_steps"],
        num_warmup_rounds=budget["pt_rounds"], num_warmup_steps=budget["pt_warmup"])


def logz_part(args, budget):
    rows = []
    for target_name, (exact, specs) in logz_targets(args.tiny).items():
        for est, spec in specs.items():
            errors, stderrs, seconds = [], [], []
            run_estimator(est, jax.random.key(999), spec, budget)  # compile
            for r in range(args.repeats):
                t0 = time.perf_counter()
                res = run_estimator(est, jax.random.key(r), spec, budget)
                log_Z = float(res.log_Z)
                seconds.append(time.perf_counter() - t0)
                errors.append(log_Z - exact)
                stderrs.append(float(res.stderr))
            errors, stderrs = np.abs(errors), np.asarray(stderrs)
            sec = float(np.mean(seconds))
            rows.append((target_name, est, errors.mean(), stderrs.mean(),
                         float(np.mean(errors < 2 * stderrs)), sec, errors.mean() * math.sqrt(sec)))
            print(rows[-1], flush=True)
    lines = ["| target | estimator | mean abs error | mean stderr | within 2 se | s/run | "
             "err*sqrt(s) |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {t} | {e} | {a:.4f} | {s:.4f} | {w:.2f} | {sec:.2f} | {q:.4f} |"
              for t, e, a, s, w, sec, q in rows]
    return lines


def load_tempering_example():
    """``examples/tempering.py`` as a module (``train_rings_ebm``, ``ring_index``, ...): imported
    by path, since this script is itself named ``tempering``."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "tempering.py")
    spec = importlib.util.spec_from_file_location("tempering_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def time_samplers(log_p, start, kernels, n, budget, num_temperatures, base_scale):
    """``[(name, samples, seconds)]``: each kernel alone and inside ``parallel_tempering`` (ladder
    tuned by ``tune_ladder``), timed after a compilation run (the PT time includes the warmup)."""
    out = []
    for tempered in (False, True):
        for name, kernel in kernels.items():
            def run(key, kernel=kernel, tempered=tempered):
                if not tempered:
                    return numpyro_ebm.sample_chains(key, log_p, kernel, start, n,
                                                     num_samples=n // 2)
                pt = numpyro_ebm.parallel_tempering(log_p, kernel, base_scale=base_scale,
                                                    num_temperatures=num_temperatures)
                warm = numpyro_ebm.tune_ladder(key, pt, start, num_rounds=3,
                                               num_steps=budget["sampling_warmup"])
                return numpyro_ebm.sample_chains(jax.random.fold_in(key, 1), None, pt, start, n,
                                                 num_samples=n // 2, init_state=warm)

            run(jax.random.key(999)).samples.block_until_ready()  # compile
            t0 = time.perf_counter()
            res = run(jax.random.key(0))
            res.samples.block_until_ready()
            out.append((f"PT({name})" if tempered else name, np.asarray(res.samples, np.float64),
                        time.perf_counter() - t0))
    return out


def ess_rate(values, seconds):
    """Mean ESS/s of ``values`` ``(draws, chains)``; 0 when they never change (a stuck chain)."""
    if values.std() == 0:
        return 0.0
    return float(np.asarray(numpyro_ebm.diagnostics.ess_per_second(values, seconds)).mean())


def sampling_part(args, budget):
    log_p, mu = mixture(2)
    start = jnp.tile(mu, (budget["chains_sampling"], 1))
    kernels = {
        "MALA": functools.partial(blackjax.mala, step_size=0.8),
        "HMC": functools.partial(blackjax.hmc, step_size=0.4, inverse_mass_matrix=jnp.ones(2),
                                 num_integration_steps=5),
    }
    rows = []
    for name, samples, sec in time_samplers(log_p, start, kernels, budget["sampling_steps"],
                                            budget, 10, 10.0):
        ind = (samples[..., 0] > 0).astype(np.float64)
        rows.append((name, float(ind.mean()) - 0.3, ess_rate(ind, sec),
                     ess_rate(samples[..., 0], sec), sec))
        print(rows[-1], flush=True)
    lines = ["| sampler | weight bias | ESS/s (mode indicator) | ESS/s (x_0) | s |",
             "|---|---|---|---|---|"]
    lines += [f"| {n_} | {b:+.3f} | {ew:.1f} | {ex:.1f} | {s:.2f} |" for n_, b, ew, ex, s in rows]
    return lines


def rings_part(args, budget):
    """The learned rings EBM of ``examples/tempering.py``: chains started on the innermost ring;
    ESS/s of the outermost ring's indicator and of x_0, bias of the ring weights."""
    example = load_tempering_example()
    radii = np.asarray(numpyro_ebm.datasets.rings().radii)
    energy, data, train_seconds = example.train_rings_ebm(
        jax.random.key(1), budget["rings_updates"], budget["rings_data"])
    w_data = example.ring_fractions(data, radii)
    w_ebm = example.model_ring_fractions(energy, radii)
    angles = jax.random.uniform(jax.random.key(2), (budget["chains_sampling"],), maxval=2 * np.pi)
    start = radii[0] * jnp.stack([jnp.cos(angles), jnp.sin(angles)], -1)
    kernels = {
        "MALA": functools.partial(blackjax.mala, step_size=0.004),
        "HMC": functools.partial(blackjax.hmc, step_size=0.08, inverse_mass_matrix=jnp.ones(2),
                                 num_integration_steps=3),
    }
    log_p = lambda x: -energy(x)  # noqa: E731
    rows = []
    for name, samples, sec in time_samplers(log_p, start, kernels, budget["rings_steps"], budget,
                                            6, 2.0):
        frac = example.ring_fractions(samples, radii)
        outer = (example.ring_index(samples, radii) == len(radii) - 1).astype(np.float64)
        rows.append((name, frac, frac[-1] - w_data[-1], frac[-1] - w_ebm[-1],
                     0.5 * np.abs(frac - w_ebm).sum(), ess_rate(outer, sec),
                     float(samples[..., 0].mean()), ess_rate(samples[..., 0], sec), sec))
        print(rows[-1], flush=True)
    fmt = lambda f: " / ".join(f"{v:.3f}" for v in f)  # noqa: E731
    lines = [f"EBM: `default_energy()` trained by NCE ({budget['rings_updates']} updates on "
             f"{budget['rings_data']} draws, {train_seconds:.0f} s). Ring weights (radii "
             f"{radii.tolist()}): data {fmt(w_data)}; the EBM's own, by quadrature, {fmt(w_ebm)}. "
             "Chains start on the innermost ring. TV: total variation between the sampled ring "
             "weights and the EBM's.", "",
             "| sampler | ring weights | outer bias vs data | outer bias vs EBM | TV to EBM | "
             "ESS/s (outer-ring indicator) | E[x_0] | ESS/s (x_0) | s |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {n_} | {fmt(f)} | {bd:+.3f} | {be:+.3f} | {tv:.3f} | {ew:.1f} | {m:+.3f} | "
              f"{ex:.1f} | {s:.2f} |" for n_, f, bd, be, tv, ew, m, ex, s in rows]
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("logz", "sampling", "all"), default="all")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: a smoke run only")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.tiny:
        args.repeats = 1
        budget = dict(chains=16, ais_temperatures=20, particles=64, smc_steps=2, pt_chains=2,
                      pt_temperatures=4, pt_steps=20, pt_rounds=1, pt_warmup=10,
                      chains_sampling=4, sampling_steps=40, sampling_warmup=10,
                      rings_updates=50, rings_data=1000, rings_steps=40)
    else:
        budget = dict(chains=256, ais_temperatures=500, particles=1000, smc_steps=10,
                      pt_chains=16, pt_temperatures=16, pt_steps=2000, pt_rounds=4,
                      pt_warmup=250, chains_sampling=32, sampling_steps=4000,
                      sampling_warmup=200, rings_updates=1000, rings_data=20_000,
                      rings_steps=1000)
    cpu, ncpu = machine_info()
    load0, start = os.getloadavg()[0], time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = []
    if args.part in ("logz", "all"):
        lines += ["### log Z", ""] + logz_part(args, budget) + [""]
    if args.part in ("sampling", "all"):
        lines += ["### Sampling the separated mixture", ""] + sampling_part(args, budget) + [""]
        lines += ["### Sampling the learned rings EBM", ""] + rings_part(args, budget)
    lines = [
        "## Tempering: log Z per second (AIS, SMC, PT) and ESS per second on multimodal targets "
        "(benchmarks/tempering.py)", "",
        f"- date: {start}; machine: {cpu}, nproc={ncpu}; jax {jax.__version__}; 1-min load "
        f"{load0:.2f} at the start, {os.getloadavg()[0]:.2f} at the end", "",
        f"Budget: {budget}", "",
    ] + lines
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    sys.exit(main())
