"""The GPU benchmark of issue 17 in one command, for a machine with CUDA: the simulator at 10^6, 4 × 10^6 and
4 × 10^7 agents × 100 days, forward and forward+backward, 1 and 16 draws (`bench_simulator.py`, one process per
cell: a size that does not fit says so in its row), then one flow training step (`bench_calibration.py`).
Record the printed tables in BENCHMARKS.md with the GPU's name.

Usage: python benchmarks/bench_gpu.py [--device cuda] [--agents 1000000 4000000 40000000] [--days 100]
(`--device cpu --agents 20000 --days 5` checks the script where there is no GPU).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--agents", type=int, nargs="+", default=[1_000_000, 4_000_000, 40_000_000])
    parser.add_argument("--days", type=int, default=100)
    parser.add_argument("--draws", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--flow-agents", type=int, default=1_000_000)
    args = parser.parse_args()
    subprocess.run(
        [
            sys.executable,
            str(HERE / "bench_simulator.py"),
            "--device",
            args.device,
            "--days",
            str(args.days),
            "--agents",
            *map(str, args.agents),
            "--draws",
            *map(str, args.draws),
        ],
        check=True,
    )
    subprocess.run(
        [
            sys.executable,
            str(HERE / "bench_calibration.py"),
            "--device",
            args.device,
            "--agents",
            str(args.flow_agents),
            "--days",
            str(args.days),
            "--steps",
            "3",
        ],
        check=True,
    )


if __name__ == "__main__":
    main()
