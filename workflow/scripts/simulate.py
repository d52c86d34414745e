"""Snakemake script of rule `simulate`."""

from diffabm.simulation import simulate
from diffabm.snakemake_job import run_job

run_job(snakemake, lambda cfg: simulate(cfg, snakemake.input.population, snakemake.output.simulation))  # noqa: F821
