# The private-demo study (DecABM; diffabm.private): the epidemic simulated, differentiated and point-calibrated with
# the same seeds plainly and with every group sum computed by additive secret sharing (model.privacy), compared in a
# table and a figure.

rule private_demo:
    threads: simulation_threads
    resources:
        mem_mb=mem_mb("private_demo"),
        runtime=runtime("calibration"),
    input:
        population="results/{study}/population.zarr",
        observed="results/{study}/observed.zarr",
    output:
        store=directory("results/{study}/private_demo.zarr"),
        table=report("results/{study}/private_demo.csv", caption="../report/private_demo.rst",
                     category="Private ABM"),
    params:
        config_hash=config_hash((*CALIBRATION, "private_demo"), OTHER_MODES["point"]),
        seed=study_seed,
    log:
        "results/{study}/logs/private_demo.log",
    benchmark:
        "results/{study}/benchmarks/private_demo.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/private_demo.py"


rule plot_private_demo:
    threads: 1
    resources:
        mem_mb=SMALL_MB,
        runtime=runtime("figures"),
    input:
        "results/{study}/private_demo.zarr",
    output:
        report("results/{study}/figures/private_demo.png", caption="../report/private_demo.rst",
               category="Private ABM"),
    params:
        seed=study_seed,  # for the caption: a figure reads only its inputs
    log:
        "results/{study}/logs/plot_private_demo.log",
    benchmark:
        "results/{study}/benchmarks/plot_private_demo.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/plot_private_demo.py"
