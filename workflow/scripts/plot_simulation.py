"""Snakemake script of rule `plot_simulation`."""

from diffabm.figures.simulation import plot_simulation
from diffabm.snakemake_job import run_job

run_job(snakemake, lambda cfg: plot_simulation(snakemake.input.simulation, snakemake.output[0]))
