# Simulation-based calibration (study sbc; Talts et al. 2018): per data set i of `sbc.datasets`, a truth drawn
# from the prior and its observations (sbc_observe), the point fit and loss weight the flow needs
# (sbc_calibrate point, sbc_loss_weight; only for `loss_weight: auto`), the flow (sbc_calibrate flow); then the
# ranks of the truths among the posterior draws (sbc_ranks) and the figure (plot_sbc). A data set's jobs hash no
# `sbc` setting: more data sets leave the existing ones alone.


rule sbc_observe:
    threads: calibration_threads  # the study runs one data set per core
    resources:
        mem_mb=mem_mb("observe"),
        runtime=runtime("simulation"),
    input:
        population=population_input,
    output:
        observed=directory("results/{study}/sbc/{dataset}/observed.zarr"),
    wildcard_constraints:
        dataset=r"\d+",
    params:
        config_hash=config_hash((*MODEL, "calibration.prior")),
    log:
        "results/{study}/logs/sbc/observe_{dataset}.log",
    benchmark:
        "results/{study}/benchmarks/sbc_observe-{dataset}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/sbc_observe.py"


rule sbc_calibrate:
    retries: CALIBRATION_RETRIES
    threads: calibration_threads
    resources:
        attempt=job_attempt,
        mem_mb=mem_mb("calibrate"),
        runtime=runtime("calibration"),
        gpu=calibration_gpus,
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
        config_hash=sbc_mode_hash,
    log:
        "results/{study}/logs/sbc/calibrate_{mode}_{dataset}.log",
    benchmark:
        "results/{study}/benchmarks/sbc_calibrate-{mode}-{dataset}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/sbc_calibrate.py"


rule sbc_loss_weight:
    threads: calibration_threads
    resources:
        mem_mb=mem_mb("loss_weight"),
        runtime=runtime("calibration"),
    input:
        population=population_input,
        observed="results/{study}/sbc/{dataset}/observed.zarr",
        posterior="results/{study}/sbc/{dataset}/point/posterior.zarr",
    output:
        "results/{study}/sbc/{dataset}/loss_weight.json",
    wildcard_constraints:
        dataset=r"\d+",
    params:
        config_hash=calibration_hash(None, SBC_DATASET),
    log:
        "results/{study}/logs/sbc/loss_weight_{dataset}.log",
    benchmark:
        "results/{study}/benchmarks/sbc_loss_weight-{dataset}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/sbc_loss_weight.py"


rule sbc_ranks:
    threads: 1
    resources:
        mem_mb=SMALL_MB,
        runtime=runtime("figures"),
    input:
        population=population_input,
        observed=lambda w: sbc_datasets(w, "observed.zarr"),
        posteriors=lambda w: sbc_datasets(w, "flow/posterior.zarr"),
    output:
        store=directory("results/{study}/sbc/sbc.zarr"),
        ranks=report("results/{study}/sbc/ranks.csv", caption="../report/sbc.rst", category="SBC"),
        summary=report("results/{study}/sbc/summary.csv", caption="../report/sbc.rst", category="SBC"),
    params:
        config_hash=config_hash((*MODEL, "sbc", "calibration.prior", "calibration.flow.posterior_draws")),
        seed=study_seed,
    log:
        "results/{study}/logs/sbc/ranks.log",
    benchmark:
        "results/{study}/benchmarks/sbc_ranks.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/sbc_ranks.py"


rule plot_sbc:
    threads: 1
    resources:
        mem_mb=SMALL_MB,
        runtime=runtime("figures"),
    input:
        "results/{study}/sbc/sbc.zarr",
    output:
        report("results/{study}/figures/sbc.png", caption="../report/sbc.rst", category="SBC"),
    params:
        seed=study_seed,  # for the caption: a figure reads only its inputs
    log:
        "results/{study}/logs/sbc/plot_sbc.log",
    benchmark:
        "results/{study}/benchmarks/plot_sbc.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/plot_sbc.py"
