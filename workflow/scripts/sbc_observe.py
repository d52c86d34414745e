"""Snakemake script of rule `sbc_observe`: stage `observe` at data set {dataset}'s truth, drawn from the prior."""

from diffabm.calibration.observe import observe
from diffabm.snakemake_job import optional_input, run_job
from diffabm.studies.sbc import dataset_config

smk = snakemake
population = optional_input(smk, "population")
run_job(
    smk,
    lambda cfg: observe(dataset_config(cfg, int(smk.wildcards.dataset), population), population, smk.output.observed),
)
