"""Snakemake script of rule `plot_epidemic_curve`."""

from diffabm.figures.epidemic import plot_epidemic_curve
from diffabm.snakemake_job import run_job

run_job(snakemake, lambda cfg: plot_epidemic_curve(snakemake.input.simulation, snakemake.output[0]))  # noqa: F821
