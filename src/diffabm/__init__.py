"""diffabm: reproducible calibration studies of differentiable agent-based models."""

import os

# torch's OpenMP threads spin-wait between parallel regions by default: on a loaded workstation or a shared
# node that made the simulator 4x slower (BENCHMARKS.md, "Threads under load"). Every entry point (CLI, Snakemake
# scripts, tests) imports diffabm before torch, and libgomp reads the policy when it loads: wait passively unless
# the user chose otherwise.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
