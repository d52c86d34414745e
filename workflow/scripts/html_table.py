"""Snakemake script of rule `recovery_html`: a CSV table as an HTML page of the report."""

from diffabm.report import write_html_table
from diffabm.snakemake_job import run_job

smk = snakemake
run_job(smk, lambda cfg: write_html_table(smk.input[0], smk.output[0]))
