"""Gradient accuracy: autograd ∂E[ℓ]/∂θ against central finite differences, per Bernoulli estimator.

Run from the project root after the study's `observed.zarr` exists (e.g. `snakemake --cores 2
--config study=june-synthetic results/june-synthetic/observed.zarr`):
`.venv/bin/python benchmarks/gradient_check.py [--study june-synthetic] [--seeds 8] [--step 0.1]`.
At the study's truth, for each estimator in `conf/model/estimator/`, prints the mean over seeds of
the autograd gradient of the calibration loss with respect to the unconstrained parameters, the
finite-difference gradient of the same losses (common random numbers), and their ratio; for the
default estimator also the elasticity of total infections to each parameter (the most influential).
"""

from __future__ import annotations

import argparse

import torch

ESTIMATORS = ("event_weighted", "straight_through_gumbel", "straight_through")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="june-synthetic")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--step", type=float, default=0.1, help="finite-difference step, unconstrained scale")
    args = parser.parse_args()

    from diffabm.calibration.setup import load_target
    from diffabm.config import compose_study

    results = f"results/{args.study}"
    for estimator in ESTIMATORS:
        cfg = compose_study(args.study, [f"model/estimator={estimator}"])
        target, _, _ = load_target(cfg, f"{results}/population.zarr", f"{results}/observed.zarr")
        truth = target.unconstrained(dict(cfg.truth))
        autograd, finite = [], []
        for seed in range(args.seeds):
            theta = truth.clone().requires_grad_(True)
            (gradient,) = torch.autograd.grad(target.losses(theta, seed).sum(), theta)
            autograd.append(gradient[0])
            with torch.no_grad():
                shifts = args.step * torch.eye(target.dimension)
                up, down = (target.losses(truth + sign * shifts, seed) for sign in (1, -1))
            finite.append((up - down) / (2 * args.step))
        autograd, finite = torch.stack(autograd).mean(0), torch.stack(finite).mean(0)
        print(f"\n{estimator} ({args.study}, truth, {args.seeds} seeds × {target.replicates} replicates)")
        for name, a, f in zip(target.names, autograd.tolist(), finite.tolist()):
            print(f"  {name:18s} autograd {a:9.1f}   FD {f:9.1f}   ratio {a / f:5.2f}")
        if estimator == ESTIMATORS[0]:
            print_elasticities(target, truth, draws=32, seed=4242)


def print_elasticities(target, truth: torch.Tensor, draws: int, seed: int) -> None:
    """Which parameter is most influential: d log E[total infections] / d log θ at the truth (autograd)."""
    natural = target.natural(truth.expand(draws, -1))
    logs = {name: natural[name].log().requires_grad_(True) for name in target.names}
    output = target.model.simulate({**natural, **{name: value.exp() for name, value in logs.items()}}, seed)
    total = output.new_infections.sum()
    gradients = torch.autograd.grad(total, list(logs.values()))
    print(f"  elasticity of total infections ({draws} draws, mean total {total.item() / draws:.0f}):")
    for name, gradient in zip(target.names, gradients):
        print(f"  {name:18s} {gradient.sum().item() / total.item():6.2f}")


if __name__ == "__main__":
    main()
