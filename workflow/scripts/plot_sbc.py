"""Snakemake script of rule `plot_sbc`."""

from diffabm.figures.sbc import plot_sbc
from diffabm.snakemake_job import run_job

smk = snakemake
run_job(smk, lambda cfg: plot_sbc(smk.input[0], smk.output[0]))
