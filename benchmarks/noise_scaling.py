"""How much epidemics at the truth differ from one another, by study (population size), without gradients.

A synthetic study observes one epidemic; the spread between epidemics simulated at the same truth
bounds what its data can say about the parameters (BENCHMARKS.md, june-synthetic). Run from the
project root once each study's population exists (e.g. `snakemake
results/june-canterbury/population.zarr --cores 2 --config study=june-canterbury`):
`.venv/bin/python benchmarks/noise_scaling.py june-synthetic june-canterbury [--epidemics 64]`.
Prints per study the agents, seconds, median attack per 10^5, the standard deviation of log total
infections, the 95th/5th percentile ratio of totals, and the mean standard deviation of the age shares.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+")
    parser.add_argument("--epidemics", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8, help="epidemics per simulator call")
    args = parser.parse_args()

    from diffabm.build import build_model
    from diffabm.calibration.observe import truth_parameters
    from diffabm.config import compose_study
    from diffabm.population.schema import read_population

    for study in args.studies:
        cfg = compose_study(study)
        model = build_model(cfg, read_population(f"results/{study}/population.zarr"))
        truth = truth_parameters(cfg, model)
        totals, by_age = [], []
        start = time.perf_counter()
        with torch.no_grad():
            for seed in range(0, args.epidemics, args.batch):
                output = model.simulate(
                    {name: torch.full((args.batch,), value) for name, value in truth.items()}, seed=900 + seed
                )
                totals.append(output.new_infections.sum(1).numpy())
                by_age.append(output.infections_by_age.sum(1).numpy())
        seconds = time.perf_counter() - start
        totals = np.concatenate(totals)
        shares = np.concatenate(by_age) / totals[:, None]
        print(
            f"{study}: {model.n_agents:,} agents, {len(totals)} epidemics in {seconds:.0f} s; "
            f"attack per 10^5 (median) {np.median(totals) / model.n_agents * 1e5:.0f}; "
            f"sd of log total {np.log(totals).std(ddof=1):.3f}; "
            f"95%/5% total {np.quantile(totals, 0.95) / np.quantile(totals, 0.05):.2f}; "
            f"sd of age shares {shares.std(0, ddof=1).mean():.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
