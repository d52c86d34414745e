"""Epidemic simulator speed and memory: forward and forward+backward over agents × 100 days.

Each measurement runs in its own process so peak memory (ru_maxrss) belongs to it alone.
Usage: python benchmarks/bench_simulator.py [--agents 100000 1000000 4000000] [--days 100]
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


def measure(agents: int, days: int, mode: str) -> dict:
    """One run in this process: toy population, default model, 4 layers, 1 draw."""
    import torch

    from diffabm.build import build_model
    from diffabm.config import compose_study
    from diffabm.population.toy import toy_population

    overrides = [f"model.days={days}", "model.draws=1", "interventions=[]"]
    model = build_model(compose_study("toy", overrides), toy_population(agents, seed=0))
    with torch.no_grad():  # warm-up: thread pools and lazy kernels, not part of the measurement
        model.simulate({k: v[:1] for k, v in model.natural_parameters().items()}, seed=1)
    start = time.perf_counter()
    if mode == "forward":
        with torch.no_grad():
            total = model(seed=0).new_infections.sum()
    else:
        output = model({k: v.requires_grad_(True) for k, v in model.natural_parameters().items()}, seed=0)
        total = output.new_infections.sum()
        total.backward()
    seconds = time.perf_counter() - start
    return {"agents": agents, "days": days, "mode": mode,
            "seconds": round(seconds, 2), "agent_steps_per_s_M": round(agents * days / seconds / 1e6, 1),
            "peak_rss_GB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "infections": int(total.item()), "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, nargs="+", default=[100_000, 1_000_000, 4_000_000])
    parser.add_argument("--days", type=int, default=100)
    parser.add_argument("--one", nargs=3, metavar=("AGENTS", "DAYS", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        agents, days, mode = args.one
        print(json.dumps(measure(int(agents), int(days), mode)))
        return
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print("| agents | days | mode | seconds | M agent-steps/s | peak RSS GB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for agents in args.agents:
        for mode in ("forward", "forward+backward"):
            result = subprocess.run([sys.executable, __file__, "--one", str(agents), str(args.days), mode],
                                    capture_output=True, text=True)
            if result.returncode:
                print(f"| {agents:,} | {args.days} | {mode} | failed: {result.stderr.strip()[-200:]} |")
                continue
            r = json.loads(result.stdout.strip().splitlines()[-1])
            print(f"| {agents:,} | {r['days']} | {mode} | {r['seconds']} | "
                  f"{r['agent_steps_per_s_M']} | {r['peak_rss_GB']} |", flush=True)


if __name__ == "__main__":
    main()
