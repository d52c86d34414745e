"""Snakemake script of rule `plot_calibration`."""

from diffabm.figures.calibration import plot_calibration
from diffabm.snakemake_job import run_job

run_job(
    snakemake,
    lambda cfg: plot_calibration(
        cfg, snakemake.input.posterior, snakemake.input.fit, snakemake.input.metrics, snakemake.output[0]
    ),
)
