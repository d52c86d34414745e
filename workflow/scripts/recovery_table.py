"""Snakemake script of rule `recovery_table`."""

from diffabm.calibration.summary import write_recovery_table
from diffabm.snakemake_job import run_job

runs = dict(zip(snakemake.params.modes, zip(snakemake.input.posteriors, snakemake.input.fits)))
run_job(snakemake, lambda cfg: write_recovery_table(runs, snakemake.output[0]))
