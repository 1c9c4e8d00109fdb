"""Assemble benchmarks/RESULTS.md from the per-benchmark snippets in benchmarks/results/."""

import pathlib

HERE = pathlib.Path(__file__).parent
ORDER = [
    "summary", "sampling", "gibbs_sweeps", "latency", "scale", "gpu", "toy_density", "adversarial_sampling_flow", "toy_density_2026-11-26", "ising",
    "rbm", "discrete_samplers", "ais", "tempering", "bayesian", "applications", "examples", "bad_inputs", "bad_inputs_0.1",
]

HEADER = """# Benchmark results

Measurements, not tests: each section is written by one script in `benchmarks/` that runs ours,
hand-written JAX and the peer library side by side in one run, and records the date, machine and
library versions. Read the ratios; absolute times mean little on shared machines. Where a target
is missed, the section says so and why. Regenerate this file with
`python benchmarks/collect_results.py` after running a benchmark.
"""


def main():
    parts = [HEADER]
    snippets = {p.stem: p for p in (HERE / "results").glob("*.md")}
    for name in ORDER + sorted(set(snippets) - set(ORDER)):
        if name in snippets:
            parts.append(snippets[name].read_text().strip())
    (HERE / "RESULTS.md").write_text("\n\n---\n\n".join(parts) + "\n")
    print(f"wrote {HERE / 'RESULTS.md'} from {len(parts) - 1} snippets")


if __name__ == "__main__":
    main()
