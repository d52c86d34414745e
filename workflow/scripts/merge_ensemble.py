"""Snakemake script of rule `merge_ensemble`."""

import logging

from diffabm.calibration.ensemble import merge_ensemble
from diffabm.config import compose_study

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO)  # noqa: F821
cfg = compose_study(snakemake.wildcards.study, snakemake.params.overrides)  # noqa: F821
merge_ensemble(cfg, snakemake.input.members, snakemake.input.population, snakemake.input.observed,  # noqa: F821
               snakemake.output.posterior, snakemake.output.fit, snakemake.output.metrics)  # noqa: F821
