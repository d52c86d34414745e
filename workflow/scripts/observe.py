"""Snakemake script of rule `observe`."""

from diffabm.calibration.observe import observe
from diffabm.snakemake_job import run_job

run_job(snakemake, lambda cfg: observe(cfg, snakemake.input.population, snakemake.output.observed))  # noqa: F821
