"""Snakemake script of rule `simulate`."""

import logging

import torch

from diffabm.config import compose_study
from diffabm.simulation import simulate

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO)  # noqa: F821
torch.set_num_threads(snakemake.threads)  # noqa: F821
cfg = compose_study(snakemake.wildcards.study, snakemake.params.overrides)  # noqa: F821
simulate(cfg, snakemake.input.population, snakemake.output.simulation)  # noqa: F821
