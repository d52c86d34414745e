"""Snakemake script of rule `merge_counterfactuals`."""

from diffabm.counterfactual import merge_counterfactuals
from diffabm.snakemake_job import run_job

smk = snakemake
run_job(smk, lambda cfg: merge_counterfactuals(cfg, list(smk.input.scenarios), smk.output.store, smk.output.table))
