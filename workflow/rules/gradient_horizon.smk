# The gradient-horizon study (bh-gradient-horizon): the spread and bias of gradient estimators, and the
# figures and table that compare them with the flows of `calibration.variants` (one per estimator).


rule gradient_study:
    threads: calibration_threads  # the simulator's tensors are (draws, 4): the study sets 1 thread
    resources:
        mem_mb=BASE_MB,
        runtime=runtime("calibration"),
    input:
        observed="results/{study}/observed.zarr",
    output:
        directory("results/{study}/gradient_study.zarr"),
    params:
        config_hash=config_hash((*MODEL, "gradient_study", "calibration.loss", "calibration.prior",
                                 "calibration.flow")),
    log:
        "results/{study}/logs/gradient_study.log",
    benchmark:
        "results/{study}/benchmarks/gradient_study.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/gradient_study.py"


rule gradient_horizon_report:
    threads: 1
    resources:
        mem_mb=SMALL_MB,
        runtime=runtime("figures"),
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
        config_hash=config_hash(("calibration.prior", "truth")),
        seed=study_seed,
        variants=variants,
    log:
        "results/{study}/logs/gradient_horizon_report.log",
    benchmark:
        "results/{study}/benchmarks/gradient_horizon_report.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/gradient_horizon_report.py"
