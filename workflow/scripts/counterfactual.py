"""Snakemake script of rule `counterfactual` (one scenario)."""

from diffabm.counterfactual import write_scenario
from diffabm.snakemake_job import optional_input, run_job

smk = snakemake
run_job(
    smk,
    lambda cfg: write_scenario(
        cfg, smk.wildcards.scenario, optional_input(smk, "population"), smk.input.posterior, smk.output.scenario
    ),
)
