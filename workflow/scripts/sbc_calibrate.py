"""Snakemake script of rule `sbc_calibrate`: stage `calibrate` ({mode}) on data set {dataset}'s observations."""

from pathlib import Path

from diffabm.calibration.stage import calibrate
from diffabm.snakemake_job import optional_input, run_job
from diffabm.studies.sbc import dataset_config

smk = snakemake
population = optional_input(smk, "population")
run_job(
    smk,
    lambda cfg: calibrate(
        dataset_config(cfg, int(smk.wildcards.dataset), population),
        smk.wildcards.mode,
        population,
        smk.input.observed,
        Path(smk.output.posterior).parent,
        optional_input(smk, "loss_weight"),
        resume=smk.resources.attempt > 1,
    ),
)
