#!/usr/bin/env bash
# Snakemake runs this once, inside the new environment, from the workflow's working directory (the checkout):
# torch's CPU build first (a looser pin pulls a multi-GB CUDA build), then the package, editable so that the
# rules run the checkout's code.
set -euo pipefail
python -m pip install --quiet torch==2.13.0
python -m pip install --quiet -e .
