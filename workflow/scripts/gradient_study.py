"""Snakemake script of rule `gradient_study`."""

from diffabm.snakemake_job import run_job
from diffabm.studies.gradient_horizon import write_gradient_study

smk = snakemake
run_job(smk, lambda cfg: write_gradient_study(cfg, smk.input.observed, smk.output[0]))
