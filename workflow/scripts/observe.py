"""Snakemake script of rule `observe`."""

import logging

import torch

from diffabm.calibration.observe import observe
from diffabm.config import compose_study

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO)  # noqa: F821
torch.set_num_threads(snakemake.threads)  # noqa: F821
cfg = compose_study(snakemake.wildcards.study, snakemake.params.overrides)  # noqa: F821
observe(cfg, snakemake.input.population, snakemake.output.observed)  # noqa: F821
