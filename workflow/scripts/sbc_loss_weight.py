"""Snakemake script of rule `sbc_loss_weight`: stage `loss_weight` on data set {dataset} from its point fit."""

from diffabm.calibration.weight import write_loss_weight
from diffabm.snakemake_job import optional_input, run_job
from diffabm.studies.sbc import dataset_config

smk = snakemake
population = optional_input(smk, "population")
run_job(
    smk,
    lambda cfg: write_loss_weight(
        dataset_config(cfg, int(smk.wildcards.dataset), population),
        population,
        smk.input.observed,
        smk.input.posterior,
        smk.output[0],
    ),
)
