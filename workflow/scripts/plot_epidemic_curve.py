"""Snakemake script of rule `plot_epidemic_curve`."""

import logging

from diffabm.figures.epidemic import plot_epidemic_curve

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO)  # noqa: F821
plot_epidemic_curve(snakemake.input.simulation, snakemake.output[0])  # noqa: F821
