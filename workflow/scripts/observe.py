"""Snakemake script of rule `observe`."""

from diffabm.calibration.observe import observe
from diffabm.snakemake_job import optional_input, run_job

smk = snakemake
run_job(smk, lambda cfg: observe(cfg, optional_input(smk, "population"), smk.output.observed))
