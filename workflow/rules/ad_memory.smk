# The AD memory study (ad-memory; Quera-Bofarull et al. 2023, Fig. 3): peak memory per agent and wall time of one
# gradient against the days for each AD mode (ad_memory), its England extrapolation, and the figure.


def ad_memory_targets(study):
    """The study's memory store, tables and figure (for `rule all`), if it has an `ad_memory` section."""
    if study_config(study).get("ad_memory") is None:
        return []
    return [f"results/{study}/ad_memory.zarr", f"results/{study}/figures/ad_memory.png"]


rule ad_memory:
    threads: 2  # wall times are on two torch threads; the job's memory worker uses the same
    resources:
        mem_mb=4000,
        runtime=30,
    output:
        store=directory("results/{study}/ad_memory.zarr"),
        table=report("results/{study}/ad_memory.csv", caption="../report/ad_memory.rst", category="AD memory"),
        england=report("results/{study}/ad_memory_england.csv", caption="../report/ad_memory.rst",
                       category="AD memory"),
    params:
        overrides=OVERRIDES,
    log:
        "results/{study}/logs/ad_memory.log",
    benchmark:
        "results/{study}/benchmarks/ad_memory.tsv"
    script:
        "../scripts/ad_memory.py"


rule plot_ad_memory:
    threads: 1
    input:
        "results/{study}/ad_memory.zarr",
    output:
        report("results/{study}/figures/ad_memory.png", caption="../report/ad_memory.rst", category="AD memory"),
    params:
        overrides=OVERRIDES,
    log:
        "results/{study}/logs/plot_ad_memory.log",
    benchmark:
        "results/{study}/benchmarks/plot_ad_memory.tsv"
    script:
        "../scripts/plot_ad_memory.py"
