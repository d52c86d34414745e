"""Snakemake script of rule `simulate`."""

from diffabm.simulation import simulate
from diffabm.snakemake_job import optional_input, run_job

smk = snakemake
run_job(smk, lambda cfg: simulate(cfg, optional_input(smk, "population"), smk.output.simulation))
