"""Snakemake script of rule `synthesize`."""

import logging

from diffabm.config import compose_study
from diffabm.population.synthesize import synthesize

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO)  # noqa: F821
cfg = compose_study(snakemake.wildcards.study, snakemake.params.overrides)  # noqa: F821
synthesize(cfg, snakemake.output.population, snakemake.output.report)  # noqa: F821
