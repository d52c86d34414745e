"""Snakemake script of rule `gradient_study`."""

from diffabm.studies.gradient_horizon import write_gradient_study
from diffabm.snakemake_job import run_job

smk = snakemake  # noqa: F821
run_job(smk, lambda cfg: write_gradient_study(cfg, smk.input.observed, smk.output[0]))
