"""One flow epoch of the Brock & Hommes study (5 draws, T = 100, MAF 16 × [20, 20], AdamW): the objective,
its gradient and the optimiser step, per gradient estimator, timed without Lightning's loop. BlackBIRDS
measured 1.0 s for the same epoch on this kind of CPU (issue 12).

    .venv/bin/python benchmarks/bench_brock_hommes.py --epochs 50 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from diffabm.build import build_model
    from diffabm.calibration.setup import build_module, build_target
    from diffabm.config import compose_study

    torch.set_num_threads(args.threads)
    cfg = compose_study("bh-gradient-horizon")
    model = build_model(cfg)
    with torch.no_grad():
        truth = {name: torch.tensor([value]) for name, value in {**model.defaults, **cfg.truth}.items()}
        observed = model.to_dataset(model.simulate(truth, seed=int(cfg.seed))).isel(draw=0, drop=True)
    print(f"| estimator | seconds per epoch (median of {args.epochs}) |\n| --- | --- |")
    for name, overrides in cfg.calibration.variants.items():
        variant = compose_study("bh-gradient-horizon", list(overrides))
        target, prior = build_target(variant, build_model(variant), observed)
        module = build_module("flow", variant.calibration.flow, target, prior, seed=0)
        optimiser = torch.optim.AdamW(module.parameters(), lr=variant.calibration.flow.lr)
        times = []
        for epoch in range(args.epochs + 1):
            start = time.perf_counter()
            optimiser.zero_grad()
            objective, _ = module.objective()
            objective.backward()
            optimiser.step()
            if epoch:  # the first is a warm-up
                times.append(time.perf_counter() - start)
        print(f"| {name} | {statistics.median(times):.4f} |")


if __name__ == "__main__":
    main()
