"""Snakemake script of rule `gradient_horizon_report`."""

from pathlib import Path

from diffabm.figures.gradient_horizon import gradient_horizon_report
from diffabm.snakemake_job import run_job

smk = snakemake
names = smk.params.variants
run_job(
    smk,
    lambda cfg: gradient_horizon_report(
        cfg,
        smk.input.study,
        dict(zip(names, smk.input.posteriors)),
        dict(zip(names, smk.input.metrics)),
        Path(smk.output.figures[0]).parent,
        smk.output.table,
    ),
)
