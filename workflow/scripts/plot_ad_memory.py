"""Snakemake script of rule `plot_ad_memory`."""

from diffabm.figures.ad_memory import plot_ad_memory
from diffabm.snakemake_job import run_job

smk = snakemake
run_job(smk, lambda cfg: plot_ad_memory(smk.input[0], smk.output[0]))
