"""Snakemake script of rule `benchmark_table`."""

from diffabm.report import write_benchmark_table
from diffabm.snakemake_job import run_job

smk = snakemake
run_job(smk, lambda cfg: write_benchmark_table(smk.params.benchmarks, smk.output.table, smk.output.html))
