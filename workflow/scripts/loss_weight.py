"""Snakemake script of rule `loss_weight`: the flow's GVI weight from the point fit."""

from diffabm.calibration.weight import write_loss_weight
from diffabm.snakemake_job import optional_input, run_job

smk = snakemake
run_job(
    smk,
    lambda cfg: write_loss_weight(
        cfg, optional_input(smk, "population"), smk.input.observed, smk.input.posterior, smk.output[0]
    ),
)
