# Simulation of the epidemic model at the configured parameters, and its figure.


rule simulate:
    threads: 2
    input:
        population="results/{study}/population.zarr",
    output:
        simulation=directory("results/{study}/simulation.zarr"),
    params:
        overrides=OVERRIDES,
    log:
        "results/{study}/logs/simulate.log",
    script:
        "../scripts/simulate.py"


rule plot_epidemic_curve:
    input:
        simulation="results/{study}/simulation.zarr",
    output:
        report(
            "results/{study}/figures/epidemic_curve.png",
            caption="../report/epidemic_curve.rst",
            category="Simulation",
        ),
    params:
        overrides=OVERRIDES,
    log:
        "results/{study}/logs/plot_epidemic_curve.log",
    script:
        "../scripts/plot_epidemic_curve.py"
