# The report's own items (`snakemake --report results/<study>/report.html`, `make report`): the study's resolved
# config and the benchmark records of the study's jobs, gathered once every other result is there.


localrules:  # a few seconds each: on a cluster, on the submitting machine instead of the queue
    resolved_config,
    benchmark_table,
    recovery_html,


rule resolved_config:
    threads: 1
    resources:
        mem_mb=SMALL_MB,
        runtime=runtime("figures"),
    output:
        config="results/{study}/config.yaml",
        html=report("results/{study}/report/config.html", caption="../report/config.rst", category="Study"),
    params:
        config_hash=full_config_hash,  # any edit rewrites it
        seed=study_seed,
    log:
        "results/{study}/logs/resolved_config.log",
    benchmark:
        "results/{study}/benchmarks/resolved_config.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/resolved_config.py"


rule benchmark_table:
    threads: 1
    resources:
        mem_mb=SMALL_MB,
        runtime=runtime("figures"),
    input:
        lambda w: study_targets(w.study),  # after every job of the study: their records are all there
    output:
        table="results/{study}/benchmarks.csv",
        html=report("results/{study}/report/benchmarks.html", caption="../report/benchmarks.rst", category="Study"),
    params:
        benchmarks="results/{study}/benchmarks",
        seed=study_seed,
    log:
        "results/{study}/logs/benchmark_table.log",
    benchmark:
        "results/{study}/benchmarks/benchmark_table.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/benchmark_table.py"
