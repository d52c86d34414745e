"""Benchmark: the Auckland Delta study (`nz-delta-auckland`) at full scale on this machine: synthesis of the
reweighted, vaccinated Auckland population at `population.scale` 1.0, then forward runs of the study's model
(its interventions, vaccination and case reporting) over its days, 1 draw, after a warm-up.

Run from the project root: `.venv/bin/python benchmarks/bench_nz_full_scale.py [--runs 3] [--threads 2]`.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import torch

from diffabm.build import build_model
from diffabm.config import compose_study
from diffabm.population.synthesize import synthesize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = compose_study("nz-delta-auckland", ["population.scale=1.0"])
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        population = synthesize(cfg, Path(folder) / "population.zarr", Path(folder) / "report")
        synthesis_s = time.perf_counter() - start
        model = build_model(cfg, population)
    parameters = model.natural_parameters(1)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} threads")
    print(f"agents: {model.n_agents:,}  days: {model.days}  synthesis: {synthesis_s:.1f} s")
    with torch.no_grad():
        model.simulate(parameters, seed=0)  # warm-up
        for run in range(args.runs):
            start = time.perf_counter()
            output = model.simulate(parameters, seed=run + 1)
            print(
                f"forward run {run + 1}: {time.perf_counter() - start:.2f} s, "
                f"{int(output.new_infections.sum()):,} infections"
            )
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
