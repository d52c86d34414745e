# diffabm workflow: `snakemake --cores all` builds the default study;
# `snakemake --cores all --config study=<name>` another (conf/experiment/<name>.yaml).
from diffabm.config import compose_study

STUDY = config.get("study", "default")
OVERRIDES = list(config.get("overrides", []))
CFG = compose_study(STUDY, OVERRIDES)
RESULTS = f"results/{STUDY}"


include: "workflow/rules/common.smk"
include: "workflow/rules/population.smk"
include: "workflow/rules/simulation.smk"
include: "workflow/rules/calibration.smk"


rule all:
    input:
        f"{RESULTS}/population.zarr",
        f"{RESULTS}/simulation.zarr",
        f"{RESULTS}/figures/epidemic_curve.png",
        calibration_targets(STUDY),
