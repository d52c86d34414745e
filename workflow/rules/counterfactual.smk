# Counterfactual scenarios (diffabm.counterfactual): one job per `{scenario}` of `counterfactual.scenarios`, each
# rerunning the posterior draws of calibration run `counterfactual.posterior` with its edited interventions; then
# the merged store, the summary table and the figure. A rerun computes only the scenarios whose store is missing.


wildcard_constraints:
    scenario="[A-Za-z0-9_]+",


def counterfactual_targets(study):
    """The merged counterfactual store, its table and figure (for `rule all`), if the study has scenarios."""
    if study_config(study).get("counterfactual") is None:
        return []
    return [f"results/{study}/counterfactuals.zarr", f"results/{study}/counterfactuals.csv",
            f"results/{study}/figures/counterfactuals.png"]


def counterfactual_posterior(wildcards):
    run = study_config(wildcards.study).counterfactual.posterior
    return f"results/{wildcards.study}/calibration/{run}/posterior.zarr"


def scenario_stores(wildcards):
    scenarios = list(study_config(wildcards.study).counterfactual.scenarios)
    return [f"results/{wildcards.study}/counterfactuals/{scenario}.zarr" for scenario in scenarios]


rule counterfactual:
    threads: 2
    resources:
        mem_mb=4000,
    input:
        population=population_input,
        posterior=counterfactual_posterior,
    output:
        scenario=directory("results/{study}/counterfactuals/{scenario}.zarr"),
    params:
        overrides=OVERRIDES,
    log:
        "results/{study}/logs/counterfactual_{scenario}.log",
    benchmark:
        "results/{study}/benchmarks/counterfactual_{scenario}.tsv"
    script:
        "../scripts/counterfactual.py"


rule merge_counterfactuals:
    input:
        scenarios=scenario_stores,
    output:
        store=directory("results/{study}/counterfactuals.zarr"),
        table="results/{study}/counterfactuals.csv",
    params:
        overrides=OVERRIDES,
    log:
        "results/{study}/logs/merge_counterfactuals.log",
    benchmark:
        "results/{study}/benchmarks/merge_counterfactuals.tsv"
    script:
        "../scripts/merge_counterfactuals.py"


rule plot_counterfactuals:
    input:
        store="results/{study}/counterfactuals.zarr",
        observed="results/{study}/observed.zarr",
    output:
        report(
            "results/{study}/figures/counterfactuals.png",
            caption="../report/counterfactuals.rst",
            category="Counterfactuals",
        ),
    params:
        overrides=OVERRIDES,
    log:
        "results/{study}/logs/plot_counterfactuals.log",
    script:
        "../scripts/plot_counterfactuals.py"
