"""Overhead of the private (secret-shared) epidemic model over the plain one: forward runs, same seeds.

Both models are built once on one toy population; rounds interleave plain and private forward simulations so that
both see the same load; the medians and their ratio are printed (and written as JSON with --output). The issue's
target: ≤ 20× the plain forward run for 3 parties in one process on 10^5 agents × 50 days. Also checks that the two
runs give the same infections.
Usage: python benchmarks/bench_private.py [--agents 100000] [--days 50] [--parties 3] [--rounds 3] [--threads 2]
[--isolation] [--output FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=50)
    parser.add_argument("--parties", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--isolation", action="store_true", help="isolation of symptomatic cases (2 shared inputs)")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()

    import torch

    from diffabm.build import build_model
    from diffabm.config import compose_study
    from diffabm.population.toy import toy_population

    torch.set_num_threads(args.threads)
    population = toy_population(args.agents, seed=0)
    interventions = (
        "interventions=[{kind:isolation,compliance:0.5,delay_days:1,layers:[school,workplace,community]}]"
        if args.isolation
        else "interventions=[]"
    )
    base = [f"model.days={args.days}", "model.draws=1", interventions, f"model.secret_sharing.parties={args.parties}"]
    models = {
        privacy: build_model(compose_study("toy", [*base, f"model.privacy={privacy}"]), population)
        for privacy in ("none", "secret_sharing")
    }
    seconds: dict[str, list[float]] = {privacy: [] for privacy in models}
    infections = {}
    with torch.no_grad():
        for model in models.values():  # warm-up
            model.simulate({k: v[:1] for k, v in model.natural_parameters().items()}, seed=1)
        for _ in range(args.rounds):
            for privacy, model in models.items():
                start = time.perf_counter()
                output = model(seed=0)
                seconds[privacy].append(time.perf_counter() - start)
                infections[privacy] = output.new_infections
    plain, private = statistics.median(seconds["none"]), statistics.median(seconds["secret_sharing"])
    result = {
        "agents": args.agents,
        "days": args.days,
        "parties": args.parties,
        "rounds": args.rounds,
        "threads": args.threads,
        "isolation": args.isolation,
        "plain_s": seconds["none"],
        "private_s": seconds["secret_sharing"],
        "plain_median_s": plain,
        "private_median_s": private,
        "ratio": private / plain,
        "total_infections": float(infections["none"].sum()),
        "max_abs_infection_difference": float((infections["none"] - infections["secret_sharing"]).abs().max()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }
    print(json.dumps(result, indent=2))
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
