# The AD memory study (ad-memory; Quera-Bofarull et al. 2023, Fig. 3): peak memory per agent and wall time of one
# gradient against the days for each AD mode (ad_memory), its England extrapolation, and the figure.


rule ad_memory:
    threads: simulation_threads  # wall times are on these torch threads; the job's memory worker uses the same
    resources:
        mem_mb=ad_memory_mb,
        runtime=runtime("calibration"),
    output:
        store=directory("results/{study}/ad_memory.zarr"),
        table=report("results/{study}/ad_memory.csv", caption="../report/ad_memory.rst", category="AD memory"),
        england=report("results/{study}/ad_memory_england.csv", caption="../report/ad_memory.rst",
                       category="AD memory"),
    params:
        config_hash=config_hash((*MODEL, "ad_memory")),
        seed=study_seed,
    log:
        "results/{study}/logs/ad_memory.log",
    benchmark:
        "results/{study}/benchmarks/ad_memory.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/ad_memory.py"


rule plot_ad_memory:
    threads: 1
    resources:
        mem_mb=SMALL_MB,
        runtime=runtime("figures"),
    input:
        "results/{study}/ad_memory.zarr",
    output:
        report("results/{study}/figures/ad_memory.png", caption="../report/ad_memory.rst", category="AD memory"),
    params:
        seed=study_seed,  # for the caption: a figure reads only its inputs
    log:
        "results/{study}/logs/plot_ad_memory.log",
    benchmark:
        "results/{study}/benchmarks/plot_ad_memory.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/plot_ad_memory.py"
