# Simulation of the study's model at the configured parameters, and its figure.


rule simulate:
    threads: 2
    input:
        population=population_input,
    output:
        simulation=directory("results/{study}/simulation.zarr"),
    params:
        overrides=OVERRIDES,
    log:
        "results/{study}/logs/simulate.log",
    script:
        "../scripts/simulate.py"


rule plot_simulation:
    input:
        simulation="results/{study}/simulation.zarr",
    output:
        report(
            "results/{study}/figures/simulation.png",
            caption="../report/simulation.rst",
            category="Simulation",
        ),
    params:
        overrides=OVERRIDES,
    log:
        "results/{study}/logs/plot_simulation.log",
    script:
        "../scripts/plot_simulation.py"
