"""Snakemake script of rule `synthesize`."""

from diffabm.population.synthesize import synthesize
from diffabm.snakemake_job import run_job

run_job(snakemake, lambda cfg: synthesize(cfg, snakemake.output.population, snakemake.output.report))
