# Simulation of the study's model at the configured parameters, and its figure.


rule simulate:
    threads: simulation_threads
    resources:
        mem_mb=mem_mb("simulate"),
        runtime=runtime("simulation"),
    input:
        population=population_input,
    output:
        simulation=directory("results/{study}/simulation.zarr"),
    params:
        config_hash=config_hash(MODEL),
    log:
        "results/{study}/logs/simulate.log",
    benchmark:
        "results/{study}/benchmarks/simulate.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/simulate.py"


rule plot_simulation:
    threads: 1
    resources:
        mem_mb=SMALL_MB,
        runtime=runtime("figures"),
    input:
        simulation="results/{study}/simulation.zarr",
    output:
        report(
            "results/{study}/figures/simulation.png",
            caption="../report/simulation.rst",
            category="Simulation",
        ),
    params:
        seed=study_seed,  # for the caption: a figure reads only its inputs
    log:
        "results/{study}/logs/plot_simulation.log",
    benchmark:
        "results/{study}/benchmarks/plot_simulation.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/plot_simulation.py"
