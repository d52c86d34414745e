"""Snakemake script of rule `merge_ensemble`."""

from diffabm.calibration.ensemble import merge_ensemble
from diffabm.snakemake_job import run_job

run_job(snakemake, lambda cfg: merge_ensemble(  # noqa: F821
    cfg, snakemake.input.members, snakemake.input.population, snakemake.input.observed,  # noqa: F821
    snakemake.output.posterior, snakemake.output.fit, snakemake.output.metrics))  # noqa: F821
