"""Snakemake script of rule `ad_memory`."""

from diffabm.snakemake_job import run_job
from diffabm.studies.ad_memory import write_ad_memory

smk = snakemake
run_job(smk, lambda cfg: write_ad_memory(cfg, smk.output.store))
