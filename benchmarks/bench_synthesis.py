"""Benchmark: synthesise all of New Zealand (scale 1.0) and print seconds and peak RSS per step.

Run from the project root: `.venv/bin/python benchmarks/bench_synthesis.py [--scale 1.0] [--seed 0]`.
Peak RSS is the process high-water mark (resource.getrusage ru_maxrss) after each step.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    from diffabm.population.census import synthesize_census

    import_s = time.perf_counter() - start
    base = OmegaConf.load(ROOT / "conf" / "population" / "census.yaml")
    config = OmegaConf.merge(
        base,
        OmegaConf.load(ROOT / "conf" / "population" / "census_nz.yaml"),
        {"scale": args.scale, "data_dir": str(ROOT / "data" / "nz" / "census")},
    )
    config.pop("defaults", None)
    synthesis = synthesize_census(config, seed=args.seed)
    population = synthesis.population
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    print(f"agents: {population.n_agents:,}  scale: {args.scale}  import: {import_s:.2f} s")
    print("groups: " + ", ".join(f"{layer} {int(ids.max()) + 1:,}" for layer, ids in population.groups.items()))
    print(f"{'step':<12}{'seconds':>10}{'peak RSS (MB)':>16}")
    for step, row in synthesis.timings.items():
        print(f"{step:<12}{row['seconds']:>10.2f}{row['peak_rss_mb']:>16.0f}")
    print(f"process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
