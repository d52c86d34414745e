# diffabm workflow: `snakemake --cores all` builds the default study;
# `snakemake --cores all --config study=<name>` another (conf/experiment/<name>.yaml);
# `snakemake --report results/<study>/report.html --config study=<name>` its HTML report (`make report`).
from diffabm.config import compose_study
from diffabm.snakemake_job import workflow_config

STUDY, OVERRIDES = workflow_config(config)  # checked and composed once: a bad value stops here
RESULTS = f"results/{STUDY}"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/population.smk"
include: "workflow/rules/simulation.smk"
include: "workflow/rules/calibration.smk"
include: "workflow/rules/gradient_horizon.smk"
include: "workflow/rules/sensitivity.smk"
include: "workflow/rules/sbc.smk"
include: "workflow/rules/ad_memory.smk"
include: "workflow/rules/counterfactual.smk"
include: "workflow/rules/private.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        study_targets(STUDY),
        report_targets(STUDY),
