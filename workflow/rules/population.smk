# Population synthesis: census tables (or the toy generator) -> population.zarr + report.
from pathlib import Path


def census_tables(wildcards):
    """Census inputs of the study's population (none for the toy generator), and the Ministry of Health's
    populations when the study reweights to them."""
    cfg = study_config(wildcards.study)
    if cfg.get("population") is None or cfg.population.kind != "census":
        return []
    reweighting = [cfg.population.health_service_file] if cfg.population.get("reweight") == "health_service" else []
    return sorted(str(p) for p in Path(cfg.population.data_dir).glob("*.parquet")) + reweighting


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
