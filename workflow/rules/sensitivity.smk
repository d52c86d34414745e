# One-shot sensitivity (diffabm.sensitivity): derivatives of the outputs of interest in every parameter by each
# method of `sensitivity.methods`, at the posterior mean of calibration run `sensitivity.posterior` (or the
# configured parameters), and its figure.


def sensitivity_targets(study):
    """The study's sensitivity store and figure (for `rule all`), if it has a `sensitivity` section."""
    if study_config(study).get("sensitivity") is None:
        return []
    return [f"results/{study}/sensitivity.zarr", f"results/{study}/figures/sensitivity.png"]


def sensitivity_posterior(wildcards):
    """The posterior whose mean the sensitivity is taken at; nothing for the configured parameters."""
    run = study_config(wildcards.study).sensitivity.posterior
    return [] if run is None else [f"results/{wildcards.study}/calibration/{run}/posterior.zarr"]


rule sensitivity:
    threads: 2
    input:
        population=population_input,
        posterior=sensitivity_posterior,
    output:
        sensitivity=directory("results/{study}/sensitivity.zarr"),
    params:
        overrides=OVERRIDES,
    log:
        "results/{study}/logs/sensitivity.log",
    benchmark:
        "results/{study}/benchmarks/sensitivity.tsv"
    script:
        "../scripts/sensitivity.py"


rule plot_sensitivity:
    input:
        sensitivity="results/{study}/sensitivity.zarr",
    output:
        report(
            "results/{study}/figures/sensitivity.png",
            caption="../report/sensitivity.rst",
            category="Sensitivity",
        ),
    params:
        overrides=OVERRIDES,
    log:
        "results/{study}/logs/plot_sensitivity.log",
    script:
        "../scripts/plot_sensitivity.py"
