"""Snakemake script of rule `private_demo`."""

from diffabm.snakemake_job import run_job
from diffabm.studies.private_demo import write_private_demo

smk = snakemake
run_job(
    smk,
    lambda cfg: write_private_demo(cfg, smk.input.population, smk.input.observed, smk.output.store, smk.output.table),
)
