"""Snakemake script of rule `sbc_ranks`."""

from diffabm.snakemake_job import optional_input, run_job
from diffabm.studies.sbc import write_sbc

smk = snakemake
run_job(
    smk,
    lambda cfg: write_sbc(
        cfg,
        optional_input(smk, "population"),
        smk.input.observed,
        smk.input.posteriors,
        smk.output.store,
        smk.output.ranks,
        smk.output.summary,
    ),
)
