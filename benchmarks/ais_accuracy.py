"""AIS accuracy: |AIS - exact log Z| and the reported error bar vs the number of temperatures.

Targets: RBMs with V = 64 visible and H = 16 hidden units, so that log Z is exact by enumerating
the 2**16 hidden states: one trained on binarized digits (CD-1 through SVI, 1000 updates) and one
with random weights (W ~ N(0, 0.5^2)). Estimators, side by side:

* ``RBM.logz_ais``: Salakhutdinov & Murray's path (scaled RBMs, hidden units summed out) with
  block Gibbs transitions; base = factorized Bernoulli with the data's pixel means (for the
  random RBM: the base with a0 = 0, i.e. uniform);
* ``numpyro_ebm.logz_ais``: the general estimator on the free energy, geometric path from a
  uniform Bernoulli base, single-site Gibbs (``numpyro_ebm.gibbs``, one sweep per temperature).

Each cell: ``--repeats`` independent runs of ``--chains`` chains; mean |error|, mean reported
standard error, and the fraction of runs whose error is within 2 reported standard errors.

Usage::

    python benchmarks/ais_accuracy.py --out benchmarks/results/ais.md
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
from _machine import machine_info  # noqa: E402
from numpyro.infer import SVI

from numpyro_ebm.estimators import ContrastiveDivergence, no_guide
from numpyro_ebm.evaluation.ais import logz_ais
from numpyro_ebm.models.rbm import RBM
from numpyro_ebm.sampling.gibbs import gibbs


def load_train():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, _ = load_digits(return_X_y=True)
    X = (X > 7).astype(np.float32)
    return train_test_split(X, test_size=0.2, random_state=0)[0]


def trained_rbm(Xtr):
    rbm = RBM(64, 16)
    svi = SVI(rbm.model, no_guide, optax.sgd(0.2),
              loss=ContrastiveDivergence(None, num_steps=1))
    result = svi.run(jax.random.key(0), 1000, jnp.asarray(Xtr), subsample_size=20,
                     progress_bar=False)
    return rbm.get_params(result.params)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--temperatures", default="10,30,100,300,1000,3000,10000")
    parser.add_argument("--generic-temperatures", default="100,1000")
    parser.add_argument("--chains", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    temps = [int(t) for t in args.temperatures.split(",")]
    generic_temps = [int(t) for t in args.generic_temperatures.split(",") if t]

    Xtr = load_train()
    rbm = RBM(64, 16)
    k1, k2 = jax.random.split(jax.random.key(1))
    targets = {
        "digits-trained RBM": (trained_rbm(Xtr), Xtr),
        "random RBM": ({"W": 0.5 * jax.random.normal(k1, (64, 16)),
                        "a": 0.2 * jax.random.normal(k2, (64,)), "b": jnp.zeros(16)}, None),
    }
    rows = []
    for target, (params, data) in targets.items():
        exact = float(rbm.log_partition(params))
        print(f"{target}: exact log Z = {exact:.4f}", flush=True)

        def measure(name, K, run):
            errs, ses, times = [], [], []
            for r in range(args.repeats + 1):  # the first run compiles; not timed
                t0 = time.perf_counter()
                res = run(jax.random.key(100 + r))
                jax.block_until_ready(res.log_Z)
                if r == 0:
                    continue
                times.append(time.perf_counter() - t0)
                errs.append(float(res.log_Z) - exact)
                ses.append(float(res.stderr))
            errs, ses = np.array(errs), np.array(ses)
            row = dict(target=target, estimator=name, K=K, mean_abs=np.abs(errs).mean(),
                       mean_err=errs.mean(), se=ses.mean(),
                       cover=np.mean(np.abs(errs) <= 2 * ses), time=np.median(times))
            rows.append(row)
            print(f"  {name:40s} K={K:6d}  mean|err| {row['mean_abs']:.4f}  mean err "
                  f"{row['mean_err']:+.4f}  reported se {row['se']:.4f}  within 2 se "
                  f"{row['cover']:.0%}  {row['time']:.2f} s/run", flush=True)

        for K in temps:
            measure("RBM.logz_ais (S&M path, block Gibbs)", K,
                    lambda key, K=K: rbm.logz_ais(key, params, data=data, num_temperatures=K,
                                                  num_chains=args.chains, schedule="linear"))
        base = dist.Bernoulli(probs=0.5 * jnp.ones(64)).to_event(1)
        for K in generic_temps:
            measure("logz_ais (generic, single-site Gibbs)", K,
                    lambda key, K=K: logz_ais(key, lambda v: rbm.free_energy(params, v), base,
                                              partial(gibbs, values=(0, 1)), args.chains, K,
                                              schedule="linear"))

    lines = ["| target | estimator | temperatures | mean abs error | mean error | mean reported "
             "s.e. | runs within 2 s.e. | time per run (s) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['target']} | {r['estimator']} | {r['K']} | {r['mean_abs']:.4f} | "
                     f"{r['mean_err']:+.4f} | {r['se']:.4f} | {r['cover']:.0%} | "
                     f"{r['time']:.2f} |")
    table = "\n".join(lines)
    print()
    print(table)
    if args.out:
        import numpyro_ebm

        cpu, nproc = machine_info()
        date = subprocess.run(["date"], capture_output=True, text=True).stdout.strip()
        text = "\n".join([
            "## AIS accuracy vs number of temperatures (benchmarks/ais_accuracy.py)",
            "",
            f"`python benchmarks/ais_accuracy.py {' '.join(argv or sys.argv[1:])}`",
            "",
            f"- date: {date}",
            f"- machine: {cpu}, nproc={nproc}, {platform.system()} {platform.machine()}; JAX "
            f"device: {jax.devices()[0].platform}; load average ~{os.getloadavg()[0]:.1f} "
            "(shared machine: times are indicative)",
            f"- versions: python {platform.python_version()}, jax {jax.__version__}, "
            f"numpyro_ebm {numpyro_ebm.__version__}",
            f"- V=64, H=16 RBMs (exact log Z by enumerating 2^16 hidden states); {args.chains} "
            f"chains per run, {args.repeats} runs per cell, linear schedules; error = AIS - exact "
            "(negative on average: AIS is a stochastic lower bound)",
            "",
            table,
            "",
        ])
        with open(args.out, "w") as f:
            f.write(text)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
