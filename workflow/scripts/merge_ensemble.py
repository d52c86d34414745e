"""Snakemake script of rule `merge_ensemble`."""

from diffabm.calibration.ensemble import merge_ensemble
from diffabm.snakemake_job import optional_input, run_job

smk = snakemake
run_job(
    smk,
    lambda cfg: merge_ensemble(
        cfg,
        smk.input.members,
        optional_input(smk, "population"),
        smk.input.observed,
        smk.output.posterior,
        smk.output.fit,
        smk.output.metrics,
    ),
)
