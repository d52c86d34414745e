"""Snakemake script of rules `calibrate` ({mode}) and `calibrate_ensemble_member` ({member})."""

from pathlib import Path

from diffabm.calibration.stage import calibrate
from diffabm.snakemake_job import run_job

wildcards = snakemake.wildcards  # noqa: F821
member = int(wildcards.member) if "member" in wildcards.keys() else None
run_job(snakemake, lambda cfg: calibrate(  # noqa: F821
    cfg, "ensemble" if member is not None else wildcards.mode, snakemake.input.population,  # noqa: F821
    snakemake.input.observed, Path(snakemake.output.posterior).parent,  # noqa: F821
    loss_weight_path=snakemake.input.get("loss_weight") or None, member=member))  # noqa: F821
