# Population synthesis: census tables (or the toy generator) -> population.zarr + report.
from pathlib import Path


def census_tables(wildcards):
    """Census inputs of the study's population (none for the toy generator), and the Ministry of Health's SA2 file
    (districts, health-service populations and vaccine uptake)."""
    cfg = study_config(wildcards.study)
    if cfg.get("population") is None or cfg.population.kind != "census":
        return []
    return sorted(str(p) for p in Path(cfg.population.data_dir).glob("*.parquet")) + [cfg.population.health_service_file]


rule synthesize:
    input:
        census_tables,
    output:
        population=directory("results/{study}/population.zarr"),
        report=report(
            directory("results/{study}/population_report"),
            patterns=["{name}.png"],
            caption="../report/population.rst",
            category="Population",
        ),
    params:
        overrides=OVERRIDES,
    log:
        "results/{study}/logs/synthesize.log",
    script:
        "../scripts/synthesize.py"
