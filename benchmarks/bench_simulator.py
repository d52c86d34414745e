"""Epidemic simulator speed and memory: forward and forward+backward over agents × 100 days.

Each measurement runs in its own process so peak memory (ru_maxrss, and on CUDA the device's peak allocation)
belongs to it alone.
Usage: python benchmarks/bench_simulator.py [--agents 100000 1000000 4000000] [--days 100] [--draws 1 16]
[--device cpu|cuda]. On a GPU, `benchmarks/bench_gpu.py` runs the issue's table in one command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import diffabm  # noqa: F401 (before torch, as diffabm's entry points: its runtime defaults, e.g. huge pages)


def toy_model(agents: int, days: int, draws: int, device: str = "cpu"):
    """The toy study's model on `toy_population(agents)` (4 layers, no interventions), warmed up: thread pools, lazy
    kernels, and the compiled kernels for `draws` draws (on a 1,000-agent model), outside any measurement."""
    import torch

    from diffabm.build import build_model
    from diffabm.config import compose_study
    from diffabm.population.toy import toy_population

    config = compose_study("toy", [f"model.days={days}", f"model.draws={draws}", "interventions=[]"])
    model = build_model(config, toy_population(agents, seed=0), device=device)
    with torch.no_grad():
        build_model(config, toy_population(1_000, seed=0), device=device)(seed=1)
        model.simulate({k: v[:1] for k, v in model.natural_parameters().items()}, seed=1)
    return model


MODES = ("forward", "forward+backward", "forward-mode", "forward-mode-per-parameter")


def run_mode(model, parameters: dict, mode: str):
    """Total infections of one simulation at seed 0: `forward` under no_grad, or differentiated w.r.t. every
    parameter (on copies of `parameters`): `forward+backward` in reverse mode, `forward-mode` in forward mode with
    every tangent in one pass (`ad.tangents_per_pass: null`), `forward-mode-per-parameter` one pass per parameter."""
    import torch

    from diffabm.models.autodiff import AutoDiff

    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: expected one of {list(MODES)}")
    if mode == "forward":
        with torch.no_grad():
            return model(parameters, seed=0).new_infections.sum()
    ad = {
        "forward+backward": AutoDiff("reverse"),
        "forward-mode": AutoDiff("forward"),
        "forward-mode-per-parameter": AutoDiff("forward", tangents_per_pass=1),
    }[mode]
    leaves = {k: v.clone().requires_grad_(True) for k, v in parameters.items()}
    total = ad.simulate(model, leaves, seed=0)["new_infections"].sum()
    total.backward()
    return total


def measure(agents: int, days: int, mode: str, draws: int = 1, device: str = "cpu") -> dict:
    """One run in this process: toy population, default model, 4 layers, `draws` parameter draws on `device`."""
    import torch

    model = toy_model(agents, days, draws, device)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    total = run_mode(model, model.natural_parameters(), mode)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {
        "agents": agents,
        "days": days,
        "mode": mode,
        "draws": draws,
        "device": device,
        "seconds": round(seconds, 3),
        "agent_steps_per_s_M": round(agents * days * draws / seconds / 1e6, 1),
        "peak_rss_GB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "peak_device_GB": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "infections": int(total.item()),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, nargs="+", default=[100_000, 1_000_000, 4_000_000])
    parser.add_argument("--days", type=int, default=100)
    parser.add_argument("--draws", type=int, nargs="+", default=[1])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", nargs=4, metavar=("AGENTS", "DAYS", "MODE", "DRAWS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        agents, days, mode, draws = args.one
        print(json.dumps(measure(int(agents), int(days), mode, int(draws), args.device)))
        return
    if args.device.startswith("cuda"):
        import torch

        print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}")
    else:
        print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print("| agents | days | draws | mode | seconds | M agent-steps/s | peak RSS GB | peak device GB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for agents in args.agents:
        for draws in args.draws:
            for mode in ("forward", "forward+backward"):
                result = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--device",
                        args.device,
                        "--one",
                        str(agents),
                        str(args.days),
                        mode,
                        str(draws),
                    ],
                    capture_output=True,
                    text=True,
                )
                if result.returncode:
                    print(
                        f"| {agents:,} | {args.days} | {draws} | {mode} | failed: "
                        f"{result.stderr.strip().splitlines()[-1][-200:]} | | | |",
                        flush=True,
                    )
                    continue
                r = json.loads(result.stdout.strip().splitlines()[-1])
                print(
                    f"| {agents:,} | {r['days']} | {draws} | {mode} | {r['seconds']} | {r['agent_steps_per_s_M']} "
                    f"| {r['peak_rss_GB']} | {r['peak_device_GB'] or '-'} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
