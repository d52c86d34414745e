"""Snakemake script of rule `plot_private_demo`."""

from diffabm.figures.private_demo import plot_private_demo
from diffabm.snakemake_job import run_job

smk = snakemake
run_job(smk, lambda cfg: plot_private_demo(smk.input[0], smk.output[0]))
