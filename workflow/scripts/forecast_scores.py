"""Snakemake script of rule `forecast_scores`."""

from diffabm.calibration.forecast import write_forecast_scores
from diffabm.snakemake_job import run_job

smk = snakemake
run_job(smk, lambda cfg: write_forecast_scores(cfg, smk.input.fit, smk.output.scores))
