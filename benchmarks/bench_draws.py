"""Draw amortisation and forward+backward memory per draw of the epidemic simulator (issue 17).

For each draw count B, one fresh process builds the toy population's model, runs a warm-up day, and times one
simulation of B draws (forward under `torch.no_grad()`, or forward+backward of total infections w.r.t. every
parameter). It reports the time per draw and the peak RSS above the process's level after the warm-up
(`ru_maxrss`; the warm-up's own peak is the baseline), and with `--tensor-peak` the peak of live tensor bytes of a
second identical run under torch's profiler (memory events; free of the allocator's fragmentation, which dominates
the RSS). With `--repeats R`, the same simulation R more times in the process: their median is the steady state of a
calibration, which runs one model again and again (the first run also pays for first touches of its memory).
Rounds alternate the cases; the table gives medians.
"Per draw vs 1 draw": (time of B draws / B) / (time of 1 draw), for the first run and for the repeats.
Usage: python benchmarks/bench_draws.py [--agents 250000] [--days 50] [--draws 1 16] [--rounds 3]
[--modes forward forward+backward] [--repeats 0] [--src PATH ... (diffabm's src/ directories to import, e.g. an
older checkout beside this one: their runs alternate within each round, for before/after comparisons)].
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from bench_simulator import MODES, run_mode, toy_model


def measure(agents: int, days: int, mode: str, draws: int, tensor_peak_run: bool = False, repeats: int = 0) -> dict:
    """One run in this process: toy population, default model, no interventions (`bench_simulator.toy_model`)."""
    import torch

    model = toy_model(agents, days, draws)
    parameters = model.natural_parameters()
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    total = run_mode(model, parameters, mode)
    seconds = time.perf_counter() - start
    infections = float(total.item())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    repeated = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_mode(model, parameters, mode)
        repeated.append(time.perf_counter() - start)
    tensor_peak = None
    if tensor_peak_run:  # the same simulation again under the profiler: the peak of live tensor bytes
        del total
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profiler:
            run_mode(model, parameters, mode)
        sizes = sorted(
            (e.start_ns(), e.nbytes()) for e in profiler.profiler.kineto_results.events() if e.name() == "[memory]"
        )
        tensor_peak = max(itertools.accumulate(size for _, size in sizes), default=0) / 2**30
    return {
        "agents": agents,
        "days": days,
        "mode": mode,
        "draws": draws,
        "seconds": seconds,
        "repeat_seconds": statistics.median(repeated) if repeated else None,
        "extra_peak_GB": (peak - baseline) / 2**20,
        "tensor_peak_GB": tensor_peak,
        "infections": infections,
    }


def run_one(agents: int, days: int, mode: str, draws: int, src: str | None, tensor_peak: bool, repeats: int) -> dict:
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    if src:
        env["PYTHONPATH"] = src
    command = [sys.executable, __file__, "--one", str(agents), str(days), mode, str(draws)]
    command += ["--tensor-peak"] if tensor_peak else []
    command += ["--repeats", str(repeats)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode:
        raise RuntimeError(result.stderr.strip().splitlines()[-1])
    return json.loads(result.stdout.strip().splitlines()[-1])


def _median_of(runs: list[dict], key: str) -> float:
    values = [run[key] for run in runs if run.get(key) is not None]
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=250_000)
    parser.add_argument("--days", type=int, default=50)
    parser.add_argument("--draws", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--modes", nargs="+", default=["forward", "forward+backward"], choices=MODES)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--src", nargs="+", default=[None], help="diffabm src/ directories (default: installed)")
    parser.add_argument("--tensor-peak", action="store_true", help="also the peak of live tensor bytes (a 2nd run)")
    parser.add_argument("--repeats", type=int, default=0, help="also the median of this many more runs in the process")
    parser.add_argument("--one", nargs=4, metavar=("AGENTS", "DAYS", "MODE", "DRAWS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        agents, days, mode, draws = args.one
        print(json.dumps(measure(int(agents), int(days), mode, int(draws), args.tensor_peak, args.repeats)))
        return
    cases = [(src, mode, draws) for mode in args.modes for draws in args.draws for src in args.src]
    runs: dict[tuple[str | None, str, int], list[dict]] = {case: [] for case in cases}
    for _ in range(args.rounds):
        for src, mode, draws in cases:
            run = run_one(args.agents, args.days, mode, draws, src, args.tensor_peak, args.repeats)
            runs[(src, mode, draws)].append(run)
    print(f"# {args.agents:,} agents x {args.days} days, {args.rounds} rounds, medians")
    print(
        "| src | mode | draws | seconds | s per draw | per draw vs 1 draw | repeated: seconds | per draw vs 1 draw "
        "| extra peak RSS GB | RSS GB per draw | tensor peak GB | tensor GB per draw |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for src, mode, draws in cases:
        seconds = _median_of(runs[(src, mode, draws)], "seconds")
        repeated = _median_of(runs[(src, mode, draws)], "repeat_seconds")
        single_repeated = _median_of(runs.get((src, mode, 1), []), "repeat_seconds")
        memory = _median_of(runs[(src, mode, draws)], "extra_peak_GB")
        single = _median_of(runs.get((src, mode, 1), []), "seconds")
        tensor = _median_of(runs[(src, mode, draws)], "tensor_peak_GB")
        print(
            f"| {src or 'installed'} | {mode} | {draws} | {seconds:.3f} | {seconds / draws:.3f} "
            f"| {seconds / draws / single:.2f} | {repeated:.3f} | {repeated / draws / single_repeated:.2f} "
            f"| {memory:.3f} | {memory / draws:.3f} "
            f"| {tensor:.3f} | {tensor / draws:.4f} |",
            flush=True,
        )
    print(json.dumps({f"{src}|{mode}|{draws}": runs[(src, mode, draws)] for src, mode, draws in cases}))


if __name__ == "__main__":
    main()
