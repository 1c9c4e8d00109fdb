"""Run every example and record the metric it prints beside its baseline, with its wall time.

Each example (``examples/*.py``) runs in a fresh process with its default settings and its
figure written to a temporary directory; the lines it prints (its metrics and the baselines it
compares with, e.g. the CRF's accuracy against the HMM's Bayes-optimal Viterbi accuracy) are
recorded as they are. This is the "every example's metric with its baseline" section of
``benchmarks/RESULTS.md``.

Usage::

    python benchmarks/examples.py --out benchmarks/results/examples.md
    python benchmarks/examples.py --only sequence_labeling,quickstart
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

from _machine import machine_info  # noqa: E402

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"

#: how to point each example's figures at a directory (most take ``--out FILE``)
OUTPUT_FLAGS = {
    "quickstart": lambda d: [],  # writes into the working directory
    "rbm_digits": lambda d: ["--out-prefix", str(d / "rbm_digits")],
    "bayesian_prior": lambda d: ["--out", str(d / "bayesian_prior.png"),
                                 "--results", str(d / "bayesian_prior.md")],
}


def run_example(path: pathlib.Path, directory: pathlib.Path, cache: pathlib.Path
                ) -> tuple[float, int, list[str]]:
    """Run one example with its figures in ``directory`` and JAX's compilation cache in
    ``cache``: ``(wall seconds, exit code, printed lines)``."""
    name = path.stem
    flags = OUTPUT_FLAGS.get(name, lambda d: ["--out", str(d / f"{name}.png")])(directory)
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"), MPLBACKEND="Agg",
               JAX_COMPILATION_CACHE_DIR=str(cache))
    env.pop("NUMPYRO_EBM_NO_CACHE", None)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, str(path), *flags], cwd=directory, env=env,
                         capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    lines = [line.rstrip() for line in out.stdout.splitlines()
             if line.strip() and not line.startswith("saved")]
    if out.returncode:
        lines.append("FAILED: " + " ".join(out.stderr.strip().splitlines()[-1:]))
    return seconds, out.returncode, lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated example names")
    parser.add_argument("--out", default=None, help="write the markdown section here")
    parser.add_argument("--no-cached-run", action="store_true",
                        help="skip the second run of each example (with a warm compilation cache)")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    paths = sorted(p for p in EXAMPLES.glob("*.py") if not names or p.stem in names)
    load0 = os.getloadavg()[0]
    sections = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            cache = pathlib.Path(tmp) / f"cache-{path.stem}"
            seconds, code, lines = run_example(path, pathlib.Path(tmp), cache)
            cached = "" if args.no_cached_run else (
                f", {run_example(path, pathlib.Path(tmp), cache)[0]:.0f} s rerun with a warm "
                "compilation cache")
            print(f"{path.stem}: {seconds:.0f} s{cached}, exit {code}", flush=True)
            for line in lines:
                print("   ", line)
            body = "\n".join(lines[-25:]) if lines else "(no output)"
            sections.append(
                f"### `{path.name}` ({seconds:.0f} s wall, first run{cached})\n\n```\n{body}\n```")

    import jax
    import numpyro

    import numpyro_ebm

    cpu, nproc = machine_info()
    text = "\n".join([
        "## Examples: each example's metric beside its baseline",
        "",
        "`python benchmarks/examples.py" + (f" --only {args.only}" if args.only else "") + "`",
        "",
        f"- date: {time.strftime('%a %b %d %H:%M:%S UTC %Y', time.gmtime())}",
        f"- machine: {cpu}, nproc={nproc}, {platform.system()} {platform.machine()}; 1-min load "
        f"{load0:.2f} at the start, {os.getloadavg()[0]:.2f} at the end",
        f"- versions: python {platform.python_version()}, jax {jax.__version__}, numpyro "
        f"{numpyro.__version__}, numpyro_ebm {numpyro_ebm.__version__}",
        "- each example runs with its defaults in a fresh process, first with an empty JAX "
        "compilation cache, then again with the cache it filled; what the first run prints is "
        "shown as is (`multiprocess.py` starts its own processes)",
        "",
        *sections,
    ]) + "\n"
    if args.out:
        pathlib.Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
