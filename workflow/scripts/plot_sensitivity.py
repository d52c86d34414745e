"""Snakemake script of rule `plot_sensitivity`."""

from diffabm.figures.sensitivity import plot_sensitivity
from diffabm.snakemake_job import run_job

run_job(snakemake, lambda cfg: plot_sensitivity(snakemake.input.sensitivity, snakemake.output[0]))
