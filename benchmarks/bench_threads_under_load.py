"""The simulator's forward pass on an idle and on a loaded machine, with OpenMP's spin-waiting (ACTIVE) and with
the passive waiting diffabm sets on import (PASSIVE): the threading fix of issue 17, before and after.

The load is one busy Python process per core (what another job on a shared node looks like). Each measurement
runs in a fresh process (the policy is read when libgomp loads), rounds interleaved, medians reported.
Usage: python benchmarks/bench_threads_under_load.py [--agents 300000] [--days 50] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time

RUN = """
import json, time, torch
from diffabm.build import build_model
from diffabm.config import compose_study
from diffabm.population.toy import toy_population
torch.set_num_threads({threads})
model = build_model(compose_study("toy", ["model.days={days}", "model.draws=1", "interventions=[]"]),
                    toy_population({agents}, seed=0))
with torch.no_grad():
    model(seed=1)
    start = time.perf_counter()
    model(seed=0)
print(json.dumps({{"seconds": time.perf_counter() - start}}))
"""


def spin(stop_after: float) -> None:
    """Busy-loop for `stop_after` seconds (one core's worth of load)."""
    end = time.time() + stop_after
    while time.time() < end:
        pass


def forward_seconds(policy: str, agents: int, days: int, threads: int) -> float:
    # diffabm keeps a policy the user set: ACTIVE here is torch's default behaviour before the fix.
    env = {**os.environ, "OMP_WAIT_POLICY": policy}
    out = subprocess.run(
        [sys.executable, "-c", RUN.format(agents=agents, days=days, threads=threads)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=300_000)
    parser.add_argument("--days", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    results: dict[tuple[str, str], list[float]] = {}
    for round_ in range(args.rounds):
        for load in ("idle", "loaded"):
            busy = (
                [multiprocessing.Process(target=spin, args=(3600,)) for _ in range(os.cpu_count() or 1)]
                if load == "loaded"
                else []
            )
            for process in busy:
                process.start()
            try:
                for policy in ("ACTIVE", "PASSIVE") if round_ % 2 == 0 else ("PASSIVE", "ACTIVE"):
                    seconds = forward_seconds(policy, args.agents, args.days, args.threads)
                    results.setdefault((load, policy), []).append(seconds)
                    print(f"round {round_ + 1}, {load}, {policy}: {seconds:.2f} s", flush=True)
            finally:
                for process in busy:
                    process.terminate()
    print(
        f"\n{args.agents:,} agents x {args.days} days forward, {args.threads} torch threads, "
        f"{os.cpu_count()} cores, medians of {args.rounds} rounds"
    )
    print("| machine | OMP_WAIT_POLICY=ACTIVE (torch's default) | PASSIVE (diffabm's) | ACTIVE / PASSIVE |")
    print("| --- | --- | --- | --- |")
    for load in ("idle", "loaded"):
        active, passive = (statistics.median(results[(load, policy)]) for policy in ("ACTIVE", "PASSIVE"))
        print(f"| {load} | {active:.2f} s | {passive:.2f} s | {active / passive:.2f} |")


if __name__ == "__main__":
    main()
