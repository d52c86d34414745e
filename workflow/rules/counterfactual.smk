# Counterfactual scenarios (diffabm.counterfactual): one job per `{scenario}` of `counterfactual.scenarios`, each
# rerunning the posterior draws of calibration run `counterfactual.posterior` with its edited interventions; then
# the merged store, the summary table and the figure. A scenario's job hashes only its own edits: adding or editing
# one scenario reruns that one (and the merge), not the others.


wildcard_constraints:
    scenario="[A-Za-z0-9_]+",


rule counterfactual:
    threads: simulation_threads
    resources:
        mem_mb=mem_mb("counterfactual"),
        runtime=runtime("simulation"),
    input:
        population=population_input,
        posterior=counterfactual_posterior,
    output:
        scenario=directory("results/{study}/counterfactuals/{scenario}.zarr"),
    params:
        config_hash=config_hash((*MODEL, "interventions", "start_date", "counterfactual.posterior",
                                 "counterfactual.draws", "counterfactual.scenarios.{scenario}")),
    log:
        "results/{study}/logs/counterfactual_{scenario}.log",
    benchmark:
        "results/{study}/benchmarks/counterfactual-{scenario}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/counterfactual.py"


rule merge_counterfactuals:
    threads: 1
    resources:
        mem_mb=SMALL_MB,
        runtime=runtime("figures"),
    input:
        scenarios=scenario_stores,
    output:
        store=directory("results/{study}/counterfactuals.zarr"),
        table=report("results/{study}/counterfactuals.csv", caption="../report/counterfactuals.rst",
                     category="Counterfactuals"),
    params:
        seed=study_seed,  # a merge reads only its inputs
    log:
        "results/{study}/logs/merge_counterfactuals.log",
    benchmark:
        "results/{study}/benchmarks/merge_counterfactuals.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/merge_counterfactuals.py"


rule plot_counterfactuals:
    threads: 1
    resources:
        mem_mb=SMALL_MB,
        runtime=runtime("figures"),
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
        seed=study_seed,  # for the caption: a figure reads only its inputs
    log:
        "results/{study}/logs/plot_counterfactuals.log",
    benchmark:
        "results/{study}/benchmarks/plot_counterfactuals.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/plot_counterfactuals.py"
