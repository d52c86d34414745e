# One-shot sensitivity (diffabm.sensitivity): derivatives of the outputs of interest in every parameter by each
# method of `sensitivity.methods`, at the posterior mean of calibration run `sensitivity.posterior` (or the
# configured parameters), and its figure.


rule sensitivity:
    threads: simulation_threads
    resources:
        mem_mb=mem_mb("sensitivity"),
        runtime=runtime("simulation"),
    input:
        population=population_input,
        posterior=sensitivity_posterior,
    output:
        sensitivity=directory("results/{study}/sensitivity.zarr"),
    params:
        config_hash=config_hash((*MODEL, "sensitivity", "ad")),
    log:
        "results/{study}/logs/sensitivity.log",
    benchmark:
        "results/{study}/benchmarks/sensitivity.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/sensitivity.py"


rule plot_sensitivity:
    threads: 1
    resources:
        mem_mb=SMALL_MB,
        runtime=runtime("figures"),
    input:
        sensitivity="results/{study}/sensitivity.zarr",
    output:
        report(
            "results/{study}/figures/sensitivity.png",
            caption="../report/sensitivity.rst",
            category="Sensitivity",
        ),
    params:
        seed=study_seed,  # for the caption: a figure reads only its inputs
    log:
        "results/{study}/logs/plot_sensitivity.log",
    benchmark:
        "results/{study}/benchmarks/plot_sensitivity.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/plot_sensitivity.py"
