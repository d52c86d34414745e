# Calibration: synthetic observations at the study's truth, then each mode of `calibration.modes` (point, calibnn,
# flow; ensemble = members merged) and each flow of `calibration.variants` (flow_<variant>: the flow with the
# variant's overrides), their figures and tables. Input functions: common.smk.


rule observe:
    threads: simulation_threads
    resources:
        mem_mb=mem_mb("observe"),
        runtime=runtime("simulation"),
    input:
        population=population_input,
        records=record_files,
    output:
        observed=directory("results/{study}/observed.zarr"),
    params:
        config_hash=config_hash(OBSERVATIONS),
    log:
        "results/{study}/logs/observe.log",
    benchmark:
        "results/{study}/benchmarks/observe.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/observe.py"


rule calibrate:
    retries: CALIBRATION_RETRIES
    threads: calibration_threads
    resources:
        attempt=job_attempt,
        mem_mb=mem_mb("calibrate"),
        runtime=runtime("calibration"),
        gpu=calibration_gpus,
    input:
        population=population_input,
        observed="results/{study}/observed.zarr",
        loss_weight=flow_loss_weight,
    output:
        posterior=directory("results/{study}/calibration/{mode}/posterior.zarr"),
        fit=directory("results/{study}/calibration/{mode}/fit.zarr"),
        metrics="results/{study}/calibration/{mode}/metrics.csv",
    wildcard_constraints:
        mode="point|calibnn|flow",
    params:
        config_hash=calibration_mode_hash,
    log:
        "results/{study}/logs/calibrate_{mode}.log",
    benchmark:
        "results/{study}/benchmarks/calibrate-{mode}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/calibrate.py"


rule calibrate_variant:
    retries: CALIBRATION_RETRIES
    threads: calibration_threads
    resources:
        attempt=job_attempt,
        mem_mb=mem_mb("calibrate"),
        runtime=runtime("calibration"),
        gpu=calibration_gpus,
    input:
        population=population_input,
        observed="results/{study}/observed.zarr",
        loss_weight=flow_loss_weight,
    output:
        posterior=directory("results/{study}/calibration/flow_{variant}/posterior.zarr"),
        fit=directory("results/{study}/calibration/flow_{variant}/fit.zarr"),
        metrics="results/{study}/calibration/flow_{variant}/metrics.csv",
    wildcard_constraints:
        variant="[A-Za-z0-9]+",
    params:
        config_hash=calibration_hash("flow"),  # of the variant's config
        variant=variant_overrides,
    log:
        "results/{study}/logs/calibrate_flow_{variant}.log",
    benchmark:
        "results/{study}/benchmarks/calibrate_variant-{variant}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/calibrate.py"


rule loss_weight:
    threads: calibration_threads
    resources:
        mem_mb=mem_mb("loss_weight"),
        runtime=runtime("calibration"),
    input:
        population=population_input,
        observed="results/{study}/observed.zarr",
        posterior="results/{study}/calibration/point/posterior.zarr",
    output:
        "results/{study}/calibration/loss_weight.json",
    params:
        config_hash=calibration_hash(None),
    log:
        "results/{study}/logs/loss_weight.log",
    benchmark:
        "results/{study}/benchmarks/loss_weight.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/loss_weight.py"


rule calibrate_ensemble_member:
    retries: CALIBRATION_RETRIES
    threads: calibration_threads
    resources:
        attempt=job_attempt,
        mem_mb=mem_mb("ensemble"),
        runtime=runtime("calibration"),
        gpu=calibration_gpus,
    input:
        population=population_input,
        observed="results/{study}/observed.zarr",
    output:
        posterior=directory("results/{study}/calibration/ensemble/members/{member}/posterior.zarr"),
        metrics="results/{study}/calibration/ensemble/members/{member}/metrics.csv",
    wildcard_constraints:
        member=r"\d+",
    params:
        config_hash=calibration_hash("ensemble"),
    log:
        "results/{study}/logs/calibrate_ensemble_{member}.log",
    benchmark:
        "results/{study}/benchmarks/calibrate_ensemble_member-{member}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/calibrate.py"


rule merge_ensemble:
    threads: simulation_threads
    resources:
        mem_mb=mem_mb("ensemble"),
        runtime=runtime("simulation"),
    input:
        members=ensemble_members,
        population=population_input,
        observed="results/{study}/observed.zarr",
    output:
        posterior=directory("results/{study}/calibration/ensemble/posterior.zarr"),
        fit=directory("results/{study}/calibration/ensemble/fit.zarr"),
        metrics="results/{study}/calibration/ensemble/metrics.csv",
    params:
        config_hash=calibration_hash("ensemble"),
    log:
        "results/{study}/logs/merge_ensemble.log",
    benchmark:
        "results/{study}/benchmarks/merge_ensemble.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/merge_ensemble.py"


rule plot_calibration:
    threads: 1
    resources:
        mem_mb=SMALL_MB,
        runtime=runtime("figures"),
    input:
        posterior="results/{study}/calibration/{mode}/posterior.zarr",
        fit="results/{study}/calibration/{mode}/fit.zarr",
        metrics="results/{study}/calibration/{mode}/metrics.csv",
    output:
        report(
            "results/{study}/figures/calibration_{mode}.png",
            caption="../report/calibration.rst",
            category="Calibration",
            subcategory="{mode}",
        ),
    params:
        config_hash=config_hash(("calibration.prior",)),  # the prior densities beside the posterior
        seed=study_seed,
    log:
        "results/{study}/logs/plot_calibration_{mode}.log",
    benchmark:
        "results/{study}/benchmarks/plot_calibration-{mode}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/plot_calibration.py"


rule recovery_table:
    threads: 1
    resources:
        mem_mb=SMALL_MB,
        runtime=runtime("figures"),
    input:
        posteriors=lambda w: calibration_run_stores(w, "posterior.zarr"),
        fits=lambda w: calibration_run_stores(w, "fit.zarr"),
    output:
        "results/{study}/calibration/recovery.csv",
    params:
        modes=lambda w: calibration_runs(w.study),
    log:
        "results/{study}/logs/recovery_table.log",
    benchmark:
        "results/{study}/benchmarks/recovery_table.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/recovery_table.py"


rule recovery_html:
    threads: 1
    resources:
        mem_mb=SMALL_MB,
        runtime=runtime("figures"),
    input:
        "results/{study}/calibration/recovery.csv",
    output:
        report("results/{study}/report/recovery.html", caption="../report/recovery.rst", category="Calibration"),
    params:
        seed=study_seed,
    log:
        "results/{study}/logs/recovery_html.log",
    benchmark:
        "results/{study}/benchmarks/recovery_html.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/html_table.py"

rule forecast_scores:
    threads: 1
    resources:
        mem_mb=SMALL_MB,
        runtime=runtime("figures"),
    input:
        fit="results/{study}/calibration/{run}/fit.zarr",
    output:
        scores=report("results/{study}/calibration/{run}/forecast_scores.csv", caption="../report/forecast_scores.rst",
                      category="Calibration", subcategory="{run}"),
    params:
        config_hash=config_hash(("calibration.holdout_days",)),
        seed=study_seed,
    log:
        "results/{study}/logs/forecast_scores_{run}.log",
    benchmark:
        "results/{study}/benchmarks/forecast_scores-{run}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/forecast_scores.py"
