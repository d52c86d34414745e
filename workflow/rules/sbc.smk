# Simulation-based calibration (study sbc; Talts et al. 2018): per data set i of `sbc.datasets`, a truth drawn
# from the prior and its observations (sbc_observe), the point fit and loss weight the flow needs
# (sbc_calibrate point, sbc_loss_weight; only for `loss_weight: auto`), the flow (sbc_calibrate flow); then the
# ranks of the truths among the posterior draws (sbc_ranks) and the figure (plot_sbc).


def sbc_targets(study):
    """The SBC tables and figure (for `rule all`), if the study has an `sbc` section."""
    if study_config(study).get("sbc") is None:
        return []
    return [f"results/{study}/sbc/{name}" for name in ("ranks.csv", "summary.csv")] + [
        f"results/{study}/figures/sbc.png"]


def sbc_datasets(wildcards, name):
    """`name` (e.g. observed.zarr, flow/posterior.zarr) of every data set of `sbc.datasets`, in order."""
    datasets = study_config(wildcards.study).sbc.datasets
    return [f"results/{wildcards.study}/sbc/{index}/{name}" for index in range(datasets)]


def sbc_loss_weight_input(wildcards):
    """The data set's loss-weight file, for a flow with `calibration.flow.loss_weight: auto`; nothing otherwise."""
    if wildcards.mode == "flow" and study_config(wildcards.study).calibration.flow.loss_weight == "auto":
        return f"results/{wildcards.study}/sbc/{wildcards.dataset}/loss_weight.json"
    return []


rule sbc_observe:
    threads: 1
    input:
        population=population_input,
    output:
        observed=directory("results/{study}/sbc/{dataset}/observed.zarr"),
    wildcard_constraints:
        dataset=r"\d+",
    params:
        overrides=OVERRIDES,
    log:
        "results/{study}/logs/sbc/observe_{dataset}.log",
    benchmark:
        "results/{study}/benchmarks/sbc/observe_{dataset}.tsv"
    script:
        "../scripts/sbc_observe.py"


rule sbc_calibrate:
    threads: calibration_threads
    resources:
        attempt=job_attempt,
    input:
        population=population_input,
        observed="results/{study}/sbc/{dataset}/observed.zarr",
        loss_weight=sbc_loss_weight_input,
    output:
        posterior=directory("results/{study}/sbc/{dataset}/{mode}/posterior.zarr"),
        fit=directory("results/{study}/sbc/{dataset}/{mode}/fit.zarr"),
        metrics="results/{study}/sbc/{dataset}/{mode}/metrics.csv",
    wildcard_constraints:
        dataset=r"\d+",
        mode="point|flow",
    params:
        overrides=OVERRIDES,
    log:
        "results/{study}/logs/sbc/calibrate_{mode}_{dataset}.log",
    benchmark:
        "results/{study}/benchmarks/sbc/calibrate_{mode}_{dataset}.tsv"
    script:
        "../scripts/sbc_calibrate.py"


rule sbc_loss_weight:
    threads: calibration_threads
    input:
        population=population_input,
        observed="results/{study}/sbc/{dataset}/observed.zarr",
        posterior="results/{study}/sbc/{dataset}/point/posterior.zarr",
    output:
        "results/{study}/sbc/{dataset}/loss_weight.json",
    wildcard_constraints:
        dataset=r"\d+",
    params:
        overrides=OVERRIDES,
    log:
        "results/{study}/logs/sbc/loss_weight_{dataset}.log",
    benchmark:
        "results/{study}/benchmarks/sbc/loss_weight_{dataset}.tsv"
    script:
        "../scripts/sbc_loss_weight.py"


rule sbc_ranks:
    threads: 1
    input:
        population=population_input,
        observed=lambda w: sbc_datasets(w, "observed.zarr"),
        posteriors=lambda w: sbc_datasets(w, "flow/posterior.zarr"),
    output:
        store=directory("results/{study}/sbc/sbc.zarr"),
        ranks=report("results/{study}/sbc/ranks.csv", caption="../report/sbc.rst", category="SBC"),
        summary=report("results/{study}/sbc/summary.csv", caption="../report/sbc.rst", category="SBC"),
    params:
        overrides=OVERRIDES,
    log:
        "results/{study}/logs/sbc/ranks.log",
    benchmark:
        "results/{study}/benchmarks/sbc/ranks.tsv"
    script:
        "../scripts/sbc_ranks.py"


rule plot_sbc:
    threads: 1
    input:
        "results/{study}/sbc/sbc.zarr",
    output:
        report("results/{study}/figures/sbc.png", caption="../report/sbc.rst", category="SBC"),
    params:
        overrides=OVERRIDES,
    log:
        "results/{study}/logs/sbc/plot_sbc.log",
    benchmark:
        "results/{study}/benchmarks/sbc/plot_sbc.tsv"
    script:
        "../scripts/plot_sbc.py"
