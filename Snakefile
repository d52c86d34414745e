# diffabm workflow: `snakemake --cores all` builds the default study;
# `snakemake --cores all --config study=<name>` another (conf/experiment/<name>.yaml).
from diffabm.config import compose_study
from diffabm.snakemake_job import workflow_config

STUDY, OVERRIDES = workflow_config(config)  # checked and composed once: a bad value stops here
RESULTS = f"results/{STUDY}"


include: "workflow/rules/common.smk"
include: "workflow/rules/population.smk"
include: "workflow/rules/simulation.smk"
include: "workflow/rules/calibration.smk"
include: "workflow/rules/gradient_horizon.smk"
include: "workflow/rules/sensitivity.smk"
include: "workflow/rules/sbc.smk"
include: "workflow/rules/ad_memory.smk"
include: "workflow/rules/counterfactual.smk"


rule all:
    input:
        population_targets(STUDY),
        f"{RESULTS}/simulation.zarr",
        f"{RESULTS}/figures/simulation.png",
        calibration_targets(STUDY),
        gradient_horizon_targets(STUDY),
        sensitivity_targets(STUDY),
        sbc_targets(STUDY),
        ad_memory_targets(STUDY),
        counterfactual_targets(STUDY),
