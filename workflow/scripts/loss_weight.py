"""Snakemake script of rule `loss_weight`: the flow's GVI weight from the point fit."""

import logging

import torch

from diffabm.calibration.weight import write_loss_weight
from diffabm.config import compose_study

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO)  # noqa: F821
torch.set_num_threads(snakemake.threads)  # noqa: F821
cfg = compose_study(snakemake.wildcards.study, snakemake.params.overrides)  # noqa: F821
write_loss_weight(cfg, snakemake.input.population, snakemake.input.observed,  # noqa: F821
                  snakemake.input.posterior, snakemake.output[0])  # noqa: F821
