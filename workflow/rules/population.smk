# Population synthesis: census tables (or the toy generator) -> population.zarr + its fit report (figures and CSV
# tables, all in the HTML report).


rule synthesize:
    threads: 1
    resources:
        mem_mb=SMALL_MB,
        runtime=runtime("simulation"),
    input:
        census_tables,
    output:
        population=directory("results/{study}/population.zarr"),
        report=report(
            directory("results/{study}/population_report"),
            patterns=["{name}.png", "{name}.csv"],
            caption="../report/population.rst",
            category="Population",
        ),
    params:
        config_hash=config_hash(POPULATION),
        seed=study_seed,
    log:
        "results/{study}/logs/synthesize.log",
    benchmark:
        "results/{study}/benchmarks/synthesize.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/synthesize.py"
