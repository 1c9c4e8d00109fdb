"""Applications of trained EBMs, each beside its baseline, in one run:

* denoising digits (PSNR): EBM posterior mean / MAP / Tweedie vs the Wiener filter;
* anomaly detection (AUROC): EBM energy vs IsolationForest and GaussianMixture, digits (each class
  normal) and two moons with uniform outliers;
* classification of digits (accuracy): conditional EBM and JEM vs LogisticRegression.

The experiments are the ones of ``examples/denoise_digits.py``, ``examples/anomaly_detection.py``
and ``examples/classify_digits.py`` (imported, not copied). Writes a markdown snippet.

Usage::

    python benchmarks/applications.py --out benchmarks/results/applications.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))

import anomaly_detection  # noqa: E402
import classify_digits  # noqa: E402
import denoise_digits  # noqa: E402
from _machine import machine_info  # noqa: E402


def machine() -> str:
    cpu, _ = machine_info()
    return (
        f"{platform.platform()}, {cpu}, {os.cpu_count()} CPUs visible; JAX device "
        f"{jax.devices()[0].platform}; jax {jax.__version__}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/applications.md")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    t_start = time.perf_counter()
    lines = [
        "## Applications: denoising, anomaly detection, classification (benchmarks/applications.py)",
        "",
        f"Date: {datetime.date.today()}. Machine: {machine()}. float32, seed {args.seed}. Data: "
        "scikit-learn digits / 16 in [0, 1], fixed 80/20 split (`random_state=0`: 1437 train, "
        "360 test). Times are wall seconds on this machine, compilation included (the CPUs were "
        "shared with other jobs, so treat them as upper bounds).",
        "",
    ]

    # ---------------------------------------------------------------- denoising
    d = denoise_digits.run(seed=args.seed, noise=0.25)
    extra = []
    for noise in (0.5,):
        rows, *_ = denoise_digits.restore(
            d["energy"], None, d["x_train"], d["clean"], noise, jax.random.key(args.seed + 7),
            4, 600, 3e-3,
        )
        extra.append((noise, rows))
    lines += [
        "### Denoising digits with a learned prior (PSNR, dB; higher is better)",
        "",
        "EBM prior: MLP 64-256-256-1 (swish) trained by denoising score matching (sigma = 0.1, "
        f"3000 Adam steps, {d['t_prior']:.0f} s) through `SVI`. Posterior "
        "`p(x|y) ∝ exp(-E(x) - |y-x|²/2s²)`: mean of 4 MALA chains x 300 kept of 600 steps "
        f"(step 3e-3; acceptance {d['acceptance']:.2f}) per image (`applications.denoise`), MAP "
        "by 300 Adam steps (`denoise_map`). Tweedie: one step `y - s² ∇E_s(y)` with a second EBM "
        "trained by DSM at sigma = s. Wiener: Gaussian prior with the training mean and "
        "covariance, closed-form posterior mean. 100 test digits, estimates clipped to [0, 1], "
        "mean per-image PSNR.",
        "",
        "| method | s = 0.25 | s = 0.5 |",
        "|---|---|---|",
    ]
    other = dict(extra[0][1])
    for name, value in d["rows"]:
        key = "noisy input" if name == "noisy input" else name
        v2 = other.get(key)
        lines.append(f"| {name} | {value:.2f} | {'' if v2 is None else f'{v2:.2f}'} |")
    psnr_of = dict(d["rows"])
    gap = psnr_of["EBM posterior mean (MALA)"] - psnr_of["Wiener (Gaussian prior, closed form)"]
    lines += [
        "",
        f"Reading: the EBM posterior mean is {gap:+.2f} dB from the Wiener filter at s = 0.25: "
        "with 1437 training digits in 64-D, this DSM prior (sigma = 0.1) is no better a prior "
        "than the Gaussian one, while the Tweedie estimate (an EBM of the noisy digits, "
        "sigma = s) is the best of all.",
        "",
        "The same posterior written as a NumPyro model (`x ~ Unnormalized(E)`, `y ~ Normal(x, s)` "
        "observed) and sampled by `MCMC(BlackJAXKernel(blackjax.mala))` on digit 0: PSNR "
        f"{d['model_psnr']:.2f} dB, RMS difference {d['agree']:.3f} to `denoise`'s posterior "
        "mean (Monte Carlo error of both).",
        "",
    ]

    # ---------------------------------------------------------------- anomaly detection
    rows, t_digits = anomaly_detection.digits_table(args.seed)
    moons, t_moons, _ = anomaly_detection.moons_table(args.seed)
    methods = ["EBM (DSM)", "IsolationForest", "GMM"]
    lines += [
        "### Anomaly detection (AUROC; higher is better)",
        "",
        "Digits: for each class, train on that class of the training split, test held-out normal "
        "digits vs all other test digits. EBM: MLP 64-128-128-1 trained by DSM (sigma = 0.1, "
        f"1000 steps), the 10 class models `vmap`-ed in one program ({t_digits:.0f} s); score = "
        "energy. IsolationForest: 200 trees. GMM: 2 components, full covariance, reg_covar 1e-2; "
        "score = -log-likelihood.",
        "",
        "| normal class | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for r in rows:
        lines.append(f"| {r['class']} | " + " | ".join(f"{r[m]:.3f}" for m in methods) + " |")
    lines.append(
        "| **mean** | " + " | ".join(f"**{np.mean([r[m] for r in rows]):.3f}**" for m in methods)
        + " |"
    )
    lines += [
        "",
        "Two moons (`numpyro_ebm.datasets.two_moons`): train on 2000 inliers; test 1000 inliers vs "
        "100 uniform outliers from [-4, 4] x [-3, 3.5] below the inliers' 1% true-density quantile. "
        f"EBM: MLP 2-128-128-1, DSM sigma = 0.1, 2000 steps ({t_moons:.0f} s).",
        "",
        "| " + " | ".join(moons) + " |",
        "|" + "---|" * len(moons),
        "| " + " | ".join(f"{v:.3f}" for v in moons.values()) + " |",
        "",
    ]

    # ---------------------------------------------------------------- classification
    c = classify_digits.run(seed=args.seed)
    lines += [
        "### Classification of digits (test accuracy)",
        "",
        "Conditional EBM: `E(y, x) = f(x)[y]`, MLP 64-128-128-10 (swish), the label an observed "
        "`Unnormalized` site (`label_ebm`), trained by `ConditionalMaximumLikelihood` (exact "
        "negative phase over the 10 labels) through `SVI`, 2000 Adam steps, batch 128; "
        "prediction by minimum energy. JEM: the same network, plus the site "
        "`x ~ Unnormalized(-logsumexp(-f(x)))` trained by PCD (ULA step 1, noise 0.01, 20 steps, "
        "128 chains from a 2000-sample replay buffer, 5% uniform restarts, alpha = 0.1), "
        "combined with the conditional likelihood by `CombinedLoss`, 2000 steps. "
        "LogisticRegression: scikit-learn defaults (L2, C = 1), `max_iter=5000`.",
        "",
        "| model | accuracy | train (s) |",
        "|---|---|---|",
    ]
    for name, acc, sec in c["rows"]:
        name = name.replace("|", "\\|")
        lines.append(f"| {name} | {acc:.4f} | {'' if np.isnan(sec) else f'{sec:.0f}'} |")
    if not c["jem_finite"]:
        lines.append("\nJEM produced non-finite losses in this run.")
    lines += ["", f"Total benchmark wall time: {time.perf_counter() - t_start:.0f} s.", ""]

    text = "\n".join(lines)
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    jnp.zeros(())  # initialize the backend before timing
    main()
