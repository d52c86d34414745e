"""The simulator's forward pass on an idle and on a loaded machine, with OpenMP's spin-waiting (ACTIVE), with
passive waiting (PASSIVE, what diffabm sets on import) and with passive waiting after a brief spin
(PASSIVE+GOMP_SPINCOUNT=10000, tried and not kept): the threading fix of issue 17, before and after.

The load is one busy Python process per core (what another job on a shared node looks like). Each measurement
runs in a fresh process (the policy is read when libgomp loads), rounds interleaved, medians reported.
Usage: python benchmarks/bench_threads_under_load.py [--agents 300000] [--days 50] [--rounds 3] [--threads 2]
[--settings ACTIVE PASSIVE PASSIVE+GOMP_SPINCOUNT=10000 (OMP_WAIT_POLICY, then + VARIABLE=VALUE each)]
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


def setting_env(setting: str) -> dict[str, str]:
    """ "PASSIVE+GOMP_SPINCOUNT=10000" -> OMP_WAIT_POLICY=PASSIVE and GOMP_SPINCOUNT=10000. The policy is always given
    (diffabm keeps a policy the user set, so ACTIVE is torch's default behaviour before the fix); GOMP_SPINCOUNT only
    where the setting names it, else it is removed from the inherited environment."""
    policy, *assignments = setting.split("+")
    env = {key: value for key, value in os.environ.items() if key != "GOMP_SPINCOUNT"}
    env["OMP_WAIT_POLICY"] = policy
    env.update(assignment.split("=", 1) for assignment in assignments)
    return env


def forward_seconds(setting: str, agents: int, days: int, threads: int) -> float:
    env = setting_env(setting)
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
    parser.add_argument("--settings", nargs="+", default=["ACTIVE", "PASSIVE", "PASSIVE+GOMP_SPINCOUNT=10000"])
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
                shift = round_ % len(args.settings)  # rotated: each setting runs first in some round
                for policy in args.settings[shift:] + args.settings[:shift]:
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
    print(f"| machine | {' | '.join(args.settings)} | each ÷ {args.settings[0]} |")
    print("| --- |" + " --- |" * (len(args.settings) + 1))
    for load in ("idle", "loaded"):
        seconds = [statistics.median(results[(load, setting)]) for setting in args.settings]
        ratios = " / ".join(f"{value / seconds[0]:.2f}" for value in seconds[1:])
        print(f"| {load} | {' | '.join(f'{value:.2f} s' for value in seconds)} | {ratios} |")


if __name__ == "__main__":
    main()
