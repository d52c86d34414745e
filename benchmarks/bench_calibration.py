"""Benchmark: simulator runs per second during flow (GVI) training, 5 draws per step.

Run from the project root: `.venv/bin/python benchmarks/bench_calibration.py [--agents 100000]
[--days 50] [--steps 5] [--draws 5] [--device cpu]`. A toy population of `--agents` agents is
observed at the default study's truth; each timed step samples `--draws` parameter sets from a
16-transform MAF, simulates them in one batched call, backpropagates w·E_q[ℓ] + KL and takes an
AdamW step (the work of one Lightning training step, without the Trainer's bookkeeping).
"""

from __future__ import annotations

import argparse
import platform
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=50)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from omegaconf import OmegaConf

    from diffabm.build import build_model
    from diffabm.calibration.flow import FlowCalibration
    from diffabm.calibration.losses import ObservationLoss
    from diffabm.calibration.observe import truth_parameters
    from diffabm.calibration.priors import build_prior
    from diffabm.calibration.target import CalibrationTarget
    from diffabm.config import compose_study
    from diffabm.population.toy import toy_population

    cfg = compose_study("default", ["population=toy", f"model.days={args.days}", "interventions=[]"])
    model = build_model(cfg, toy_population(args.agents, seed=0), device=args.device)
    truth = {name: torch.tensor([value], device=args.device) for name, value in truth_parameters(cfg, model).items()}
    with torch.no_grad():
        observed = model.simulate(truth, seed=0)
    loss = ObservationLoss("log_mse", {"new_infections": observed.new_infections[0]}, ["new_infections"])
    loss.observed = {name: values.to(args.device) for name, values in loss.observed.items()}
    prior = build_prior(OmegaConf.to_container(cfg.calibration.prior), model.space)
    target = CalibrationTarget(model, prior.names, OmegaConf.to_container(cfg.model.parameters), loss)
    module = FlowCalibration(
        target, prior, seed=0, draws_per_step=args.draws, steps_per_epoch=1, lr=1e-3, loss_weight=100.0
    ).to(args.device)
    optimizer = module.configure_optimizers()["optimizer"]

    def step() -> None:
        objective, _ = module.objective()
        optimizer.zero_grad()
        objective.backward()
        optimizer.step()

    step()  # warm-up
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(
        f"{args.agents} agents x {args.days} days, {args.draws} draws/step on {device} "
        f"({torch.get_num_threads()} threads): {seconds / args.steps:.2f} s/step, "
        f"{args.draws * args.steps / seconds:.2f} simulator runs/s"
    )


if __name__ == "__main__":
    main()
