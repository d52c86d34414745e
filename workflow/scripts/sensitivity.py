"""Snakemake script of rule `sensitivity`."""

from diffabm.sensitivity import write_sensitivity
from diffabm.snakemake_job import optional_input, run_job

smk = snakemake
run_job(
    smk,
    lambda cfg: write_sensitivity(
        cfg, optional_input(smk, "population"), optional_input(smk, "posterior"), smk.output.sensitivity
    ),
)
