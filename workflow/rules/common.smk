# Shared helpers: the study's config, composed once per study (cached), and the input functions.
import functools


wildcard_constraints:
    study="[A-Za-z0-9_-]+",


@functools.cache
def study_config(study):
    """The composed config of `study` with the run's overrides."""
    return compose_study(study, OVERRIDES)


def population_input(wildcards):
    """population.zarr for a model on a population; nothing for one without (e.g. Brock & Hommes)."""
    if study_config(wildcards.study).get("population") is None:
        return []
    return [f"results/{wildcards.study}/population.zarr"]


def population_targets(study):
    """The population store and its report, if the study has a population (for `rule all`)."""
    return [f"results/{study}/population.zarr"] if study_config(study).get("population") is not None else []


def job_attempt(wildcards, attempt):
    """The job's attempt as a resource, so that a calibration resumes its checkpoint only in a retry (attempt > 1:
    `retries`/`--retries` after a failure or a time limit), and `snakemake -f` refits."""
    return attempt


def record_files(wildcards):
    """Files of real records the study's model and observations read: the `observed:` record and the dose series
    of a vaccination intervention."""
    cfg = study_config(wildcards.study)
    doses = [spec.doses for spec in cfg.get("interventions") or [] if spec.get("kind") == "vaccination"]
    return ([cfg.observed.file] if cfg.get("observed") else []) + doses
