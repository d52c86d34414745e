"""Snakemake script of rule `recovery_table`."""

import logging

from diffabm.calibration.summary import write_recovery_table

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO)  # noqa: F821
runs = dict(zip(snakemake.params.modes, zip(snakemake.input.posteriors, snakemake.input.fits)))  # noqa: F821
write_recovery_table(runs, snakemake.output[0])  # noqa: F821
