"""Snakemake script of rules `calibrate` ({mode}) and `calibrate_ensemble_member` ({member})."""

import logging

import torch
from pathlib import Path

from diffabm.calibration.stage import calibrate
from diffabm.config import compose_study

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO)  # noqa: F821
torch.set_num_threads(snakemake.threads)  # noqa: F821
cfg = compose_study(snakemake.wildcards.study, snakemake.params.overrides)  # noqa: F821
member = int(snakemake.wildcards.member) if "member" in snakemake.wildcards.keys() else None  # noqa: F821
mode = "ensemble" if member is not None else snakemake.wildcards.mode  # noqa: F821
calibrate(cfg, mode, snakemake.input.population, snakemake.input.observed,  # noqa: F821
          Path(snakemake.output.posterior).parent, member,  # noqa: F821
          loss_weight_path=snakemake.input.get("loss_weight") or None)  # noqa: F821
