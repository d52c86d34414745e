# Calibration: synthetic observations at the study's truth, then each mode of
# `calibration.modes` (point, calibnn, flow; ensemble = members merged) and each flow of
# `calibration.variants` (flow_<variant>: the flow with the variant's overrides), and their figures.


def calibration_runs(study):
    """The study's calibration runs: its modes, then flow_<variant> for each variant."""
    calibration = study_config(study).calibration
    return [*calibration.modes, *(f"flow_{variant}" for variant in calibration.get("variants") or {})]


def calibration_targets(study):
    """Outputs of the study's calibration runs and figures (for `rule all`)."""
    cfg = study_config(study)
    if "calibration" not in cfg:
        return []
    runs = calibration_runs(study)
    return [
        *(f"results/{study}/calibration/{run}/{name}" for run in runs for name in ("posterior.zarr", "fit.zarr")),
        *(f"results/{study}/figures/calibration_{run}.png" for run in runs),
        f"results/{study}/calibration/recovery.csv",
        *(f"results/{study}/calibration/{run}/forecast_scores.csv" for run in runs if "observed" in cfg),
    ]


def calibration_threads(wildcards):
    """Torch threads of a calibration job: `calibration.threads` (1 for a model of tiny tensors)."""
    return study_config(wildcards.study).calibration.threads


def variant_overrides(wildcards):
    """The run's overrides followed by those of the flow variant."""
    return [*OVERRIDES, *study_config(wildcards.study).calibration.variants[wildcards.variant]]


@functools.cache
def run_config(study, variant=None):
    """The composed config of a calibration run: the study's, with the flow variant's overrides if any."""
    if variant is None:
        return study_config(study)
    return compose_study(study, [*OVERRIDES, *study_config(study).calibration.variants[variant]])


def ensemble_members(wildcards):
    """Posteriors of the ensemble's `calibration.ensemble.members` point calibrations."""
    members = study_config(wildcards.study).calibration.ensemble.members
    return [f"results/{wildcards.study}/calibration/ensemble/members/{k}/posterior.zarr" for k in range(members)]


def flow_loss_weight(wildcards):
    """The loss-weight file a flow with `calibration.flow.loss_weight: auto` reads; nothing otherwise."""
    cfg = run_config(wildcards.study, wildcards.get("variant"))
    if wildcards.get("mode", "flow") == "flow" and cfg.calibration.flow.loss_weight == "auto":
        return f"results/{wildcards.study}/calibration/loss_weight.json"
    return []


rule observe:
    threads: 2
    input:
        population=population_input,
        records=record_files,
    output:
        observed=directory("results/{study}/observed.zarr"),
    params:
        overrides=OVERRIDES,
    log:
        "results/{study}/logs/observe.log",
    script:
        "../scripts/observe.py"


rule calibrate:
    threads: calibration_threads
    resources:
        attempt=job_attempt,
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
        overrides=OVERRIDES,
    log:
        "results/{study}/logs/calibrate_{mode}.log",
    script:
        "../scripts/calibrate.py"


rule calibrate_variant:
    threads: calibration_threads
    resources:
        attempt=job_attempt,
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
        overrides=variant_overrides,
    log:
        "results/{study}/logs/calibrate_flow_{variant}.log",
    script:
        "../scripts/calibrate.py"


rule loss_weight:
    threads: calibration_threads
    input:
        population=population_input,
        observed="results/{study}/observed.zarr",
        posterior="results/{study}/calibration/point/posterior.zarr",
    output:
        "results/{study}/calibration/loss_weight.json",
    params:
        overrides=OVERRIDES,
    log:
        "results/{study}/logs/loss_weight.log",
    script:
        "../scripts/loss_weight.py"


rule calibrate_ensemble_member:
    threads: calibration_threads
    resources:
        attempt=job_attempt,
    input:
        population=population_input,
        observed="results/{study}/observed.zarr",
    output:
        posterior=directory("results/{study}/calibration/ensemble/members/{member}/posterior.zarr"),
        metrics="results/{study}/calibration/ensemble/members/{member}/metrics.csv",
    wildcard_constraints:
        member=r"\d+",
    params:
        overrides=OVERRIDES,
    log:
        "results/{study}/logs/calibrate_ensemble_{member}.log",
    script:
        "../scripts/calibrate.py"


rule merge_ensemble:
    input:
        members=ensemble_members,
        population=population_input,
        observed="results/{study}/observed.zarr",
    output:
        posterior=directory("results/{study}/calibration/ensemble/posterior.zarr"),
        fit=directory("results/{study}/calibration/ensemble/fit.zarr"),
        metrics="results/{study}/calibration/ensemble/metrics.csv",
    params:
        overrides=OVERRIDES,
    log:
        "results/{study}/logs/merge_ensemble.log",
    script:
        "../scripts/merge_ensemble.py"


rule plot_calibration:
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
        overrides=OVERRIDES,
    log:
        "results/{study}/logs/plot_calibration_{mode}.log",
    script:
        "../scripts/plot_calibration.py"


rule recovery_table:
    input:
        posteriors=lambda w: expand("results/{study}/calibration/{run}/posterior.zarr", study=w.study,
                                    run=calibration_runs(w.study)),
        fits=lambda w: expand("results/{study}/calibration/{run}/fit.zarr", study=w.study,
                              run=calibration_runs(w.study)),
    output:
        report("results/{study}/calibration/recovery.csv", caption="../report/recovery.rst", category="Calibration"),
    params:
        modes=lambda w: calibration_runs(w.study),
        overrides=OVERRIDES,
    log:
        "results/{study}/logs/recovery_table.log",
    script:
        "../scripts/recovery_table.py"


rule forecast_scores:
    input:
        fit="results/{study}/calibration/{run}/fit.zarr",
    output:
        scores="results/{study}/calibration/{run}/forecast_scores.csv",
    params:
        overrides=OVERRIDES,
    log:
        "results/{study}/logs/forecast_scores_{run}.log",
    benchmark:
        "results/{study}/benchmarks/forecast_scores_{run}.tsv"
    script:
        "../scripts/forecast_scores.py"
