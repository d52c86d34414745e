"""diffabm: reproducible calibration studies of differentiable agent-based models."""

import os

# torch's OpenMP threads spin-wait between parallel regions by default: on a loaded workstation or a shared
# node that made the simulator 4x slower (BENCHMARKS.md, "Threads under load"). Every entry point (CLI, Snakemake
# scripts, tests) imports diffabm before torch, and libgomp reads the policy when it loads: wait passively unless
# the user chose otherwise.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# torch's CPU allocator maps every large tensor afresh and the first touch of each 4 KiB page faults: with 16 draws
# x 10^6 agents (64 MB a tensor) the faults made the course draws 2.3x slower (BENCHMARKS.md, "Susceptible bits, the
# split after the scan, and huge pages"; whole simulations did not show it beyond their noise). With
# THP_MEM_ALLOC_ENABLE=1, torch asks the kernel for transparent huge pages on them (madvise; numpy's arrays already
# get them). Linux only; read at torch's first allocation: set before torch is imported.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__version__ = "0.1.0"
