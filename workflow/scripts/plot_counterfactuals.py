"""Snakemake script of rule `plot_counterfactuals`."""

from diffabm.figures.counterfactual import plot_counterfactuals
from diffabm.snakemake_job import run_job

smk = snakemake
run_job(smk, lambda cfg: plot_counterfactuals(smk.input.store, smk.output[0], smk.input.observed))
