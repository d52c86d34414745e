"""Snakemake script of rule `loss_weight`: the flow's GVI weight from the point fit."""

from diffabm.calibration.weight import write_loss_weight
from diffabm.snakemake_job import run_job

run_job(snakemake, lambda cfg: write_loss_weight(  # noqa: F821
    cfg, snakemake.input.population, snakemake.input.observed, snakemake.input.posterior,  # noqa: F821
    snakemake.output[0]))  # noqa: F821
