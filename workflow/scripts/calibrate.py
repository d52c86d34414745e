"""Snakemake script of rules `calibrate` ({mode}), `calibrate_variant` (a flow) and `calibrate_ensemble_member`."""

from pathlib import Path

from diffabm.calibration.stage import calibrate
from diffabm.snakemake_job import optional_input, run_job

smk = snakemake
# `in` on Snakemake's Wildcards looks at the values: the names are its keys()
member = int(smk.wildcards.member) if "member" in smk.wildcards.keys() else None  # noqa: SIM118
mode = "ensemble" if member is not None else smk.wildcards.get("mode", "flow")
run_job(
    smk,
    lambda cfg: calibrate(
        cfg,
        mode,
        optional_input(smk, "population"),
        smk.input.observed,
        Path(smk.output.posterior).parent,
        optional_input(smk, "loss_weight"),
        member,
        resume=smk.resources.attempt > 1,
    ),
)  # a retry resumes; `snakemake -f` refits
