"""Snakemake script of rule `resolved_config`."""

from diffabm.report import write_config
from diffabm.snakemake_job import run_job

smk = snakemake
run_job(smk, lambda cfg: write_config(cfg, smk.output.config, smk.output.html))
