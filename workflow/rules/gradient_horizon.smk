# The gradient-horizon study (bh-gradient-horizon): the spread and bias of gradient estimators, and the
# figures and table that compare them with the flows of `calibration.variants` (one per estimator).


def gradient_horizon_targets(study):
    """The study's figures and table (for `rule all`), if it has a `gradient_study` section."""
    if study_config(study).get("gradient_study") is None:
        return []
    return [f"results/{study}/gradient_horizon.csv"]


def variants(wildcards):
    """The study's flow variants (each estimator's flow; their names those of the gradient study's estimators)."""
    return list(study_config(wildcards.study).calibration.variants)


def variant_stores(wildcards, name):
    """`name` (posterior.zarr or metrics.csv) of each variant's flow."""
    return [f"results/{wildcards.study}/calibration/flow_{variant}/{name}" for variant in variants(wildcards)]


rule gradient_study:
    threads: 1  # the simulator's tensors are (draws, 4): more threads only add synchronisation
    input:
        observed="results/{study}/observed.zarr",
    output:
        directory("results/{study}/gradient_study.zarr"),
    params:
        overrides=OVERRIDES,
    log:
        "results/{study}/logs/gradient_study.log",
    script:
        "../scripts/gradient_study.py"


rule gradient_horizon_report:
    input:
        study="results/{study}/gradient_study.zarr",
        posteriors=lambda w: variant_stores(w, "posterior.zarr"),
        metrics=lambda w: variant_stores(w, "metrics.csv"),
    output:
        figures=[
            report(f"results/{{study}}/figures/gradient_horizon/{name}.png", caption="../report/gradient_horizon.rst",
                   category="Gradient horizon")
            for name in ("fig1_training_loss", "fig2_gradient_spread", "fig5_posterior", "fig6_gradient_estimates")
        ],
        table=report("results/{study}/gradient_horizon.csv", caption="../report/gradient_horizon.rst",
                     category="Gradient horizon"),
    params:
        overrides=OVERRIDES,
        variants=variants,
    log:
        "results/{study}/logs/gradient_horizon_report.log",
    script:
        "../scripts/gradient_horizon_report.py"
