"""Snakemake script of rule `plot_calibration`."""

import logging

from diffabm.config import compose_study
from diffabm.figures.calibration import plot_calibration

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO)  # noqa: F821
cfg = compose_study(snakemake.wildcards.study, snakemake.params.overrides)  # noqa: F821
plot_calibration(cfg, snakemake.input.posterior, snakemake.input.fit, snakemake.input.metrics,  # noqa: F821
                 snakemake.output[0])  # noqa: F821
