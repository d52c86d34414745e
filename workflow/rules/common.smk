# Shared helpers of every rule: the study's config (composed once per study, cached), the hash of the config each
# stage reads (its jobs' `params.config_hash`), threads and resources from the config, and the input functions.
import functools
import hashlib
import json
from pathlib import Path

from omegaconf import OmegaConf

from diffabm.resources import estimated_peak_bytes


# Every rule's software under `--sdm conda` (paths in `conda:` are relative to the rule files); without it the
# rules run in the environment snakemake was started from (`make install`).
CONDA_ENV = "../envs/diffabm.yaml"


wildcard_constraints:
    study="[A-Za-z0-9_-]+",


# ---------------------------------------------------------------------------------------------- the study's config


@functools.cache
def study_config(study):
    """The composed config of `study` with the run's overrides (composed once per study and run)."""
    return compose_study(study, OVERRIDES)


# More attempts of a calibration job (`resources.retries`): a retry resumes from the run's last checkpoint.
CALIBRATION_RETRIES = int(study_config(STUDY).resources.get("retries", 0))


@functools.cache
def run_config(study, variant=None):
    """The composed config of a calibration run: the study's, with the flow variant's overrides if any."""
    if variant is None:
        return study_config(study)
    return compose_study(study, [*OVERRIDES, *study_config(study).calibration.variants[variant]])


def variant_overrides(wildcards):
    """The flow variant's own overrides (the job adds them to the run's)."""
    return list(study_config(wildcards.study).calibration.variants[wildcards.variant])


# -------------------------------------------------------------- config edits rerun exactly the jobs they affect
# Each rule's `params.config_hash` is a hash of the resolved config fields its stage reads (dotted paths,
# `{wildcard}`s filled in), less the fields of EXCLUDED and those of the rule's `exclude`. Snakemake reruns a job
# whose params changed (rerun trigger `params`), so an edit reruns the jobs that read the edited field and, through
# their new outputs, the jobs downstream: nothing else. The overrides themselves are not a param (the jobs read them
# from the workflow's config), or every edit would rerun every job.
# Never part of a hash: resources of the job (threads, memory limit) and what runs, not what a run computes.
EXCLUDED = ("model.max_memory_gb", "calibration.threads", "calibration.progress_bar", "calibration.modes",
            "calibration.variants")
CALIBRATION_MODES = ("point", "calibnn", "ensemble", "flow")
# A model's simulations: the model (with its interventions and start date), its seed and the device it runs on.
MODEL = ("seed", "model", "trainer.accelerator")
POPULATION = ("seed", "population")
OBSERVATIONS = (*MODEL, "truth", "observed")
# A calibration run: the calibration's shared settings and its mode's (another mode's settings leave it alone).
CALIBRATION = (*OBSERVATIONS, "calibration", "ad", "trainer", "logger")
OTHER_MODES = {mode: tuple(f"calibration.{other}" for other in CALIBRATION_MODES if other != mode)
               for mode in (*CALIBRATION_MODES, None)}
# SBC data sets: the dataset's seed and truth derive from the study's seed and the calibration prior.
SBC_DATASET = (*MODEL, "calibration", "ad", "trainer", "logger")


@functools.cache
def resolved_container(study, variant=None):
    """The resolved config of a run as plain containers, less the EXCLUDED fields."""
    tree = OmegaConf.to_container(run_config(study, variant), resolve=True)
    for path in EXCLUDED:
        drop_field(tree, path)
    return tree


def select_field(tree, path):
    """The value at dotted `path` (None where absent)."""
    for key in path.split("."):
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def drop_field(tree, path):
    """Remove dotted `path` from nested dicts, if there."""
    *parents, key = path.split(".")
    parent = select_field(tree, ".".join(parents)) if parents else tree
    if isinstance(parent, dict):
        parent.pop(key, None)


def stage_fields(study, fields, exclude=(), variant=None):
    """{field: resolved value} of a stage's `fields`; an `exclude` path strictly inside a field is left out of it."""
    values = {}
    for field in fields:
        value = json.loads(json.dumps(select_field(resolved_container(study, variant), field)))  # a copy
        for path in exclude:
            if path.startswith(f"{field}."):
                drop_field(value, path[len(field) + 1:])
        values[field] = value
    return values


def config_hash(fields, exclude=()):
    """A params function: the hash of the stage's resolved `fields` less `exclude` (`{wildcard}`s filled in; a flow
    variant's job hashes the variant's config)."""

    def params(wildcards):
        filled = [field.format(**dict(wildcards.items())) for field in fields]
        values = stage_fields(wildcards.study, filled, exclude, wildcards.get("variant"))
        text = json.dumps(values, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    return params


def calibration_hash(mode, fields=CALIBRATION):
    """config_hash of a calibration run of `mode` (None: the shared settings only, e.g. the loss weight's)."""
    if mode is not None:
        fields = (*fields, f"calibration.{mode}")
    return config_hash(fields, OTHER_MODES[mode])


def calibration_mode_hash(wildcards):
    """config_hash of a job of rule calibrate, for its `{mode}`'s settings."""
    return calibration_hash(wildcards.mode)(wildcards)


def sbc_mode_hash(wildcards):
    """config_hash of a job of rule sbc_calibrate, for its `{mode}`'s settings (on the data set's seed and truth)."""
    return calibration_hash(wildcards.mode, SBC_DATASET)(wildcards)


def full_config_hash(wildcards):
    """The hash of the whole resolved config, resources included (the resolved config's copy, config.yaml)."""
    text = OmegaConf.to_yaml(study_config(wildcards.study), resolve=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def study_seed(wildcards):
    """The study's seed (a param, for the report's captions)."""
    return int(study_config(wildcards.study).seed)


# ------------------------------------------------------------------------------------------ threads and resources
# Threads: `resources.threads` for jobs that simulate, `calibration.threads` for calibration jobs, 1 for figures and
# tables. `runtime` (minutes; a cluster job's time limit): `resources.runtime.<kind>`. `mem_mb`: BASE_MB plus
# diffabm.resources' estimate of the job's largest simulation (agents × draws × days, with or without gradients).
BASE_MB = 1000  # a job's Python, torch and Lightning before any simulation (measured peaks: 0.4-0.5 GB)
SMALL_MB = 2000  # synthesis (all of New Zealand peaks at 0.9 GB), figures and tables
# Agents a census population is assumed to have before it is synthesised (a dry run's estimate; the jobs that read
# population.zarr are sized when it exists: Snakemake evaluates resources again once a job's inputs are there).
UNSYNTHESISED_AGENTS = 100_000


def simulation_threads(wildcards):
    """Threads of a job that simulates: `resources.threads`."""
    return int(study_config(wildcards.study).resources.threads)


def calibration_threads(wildcards):
    """Torch threads of a calibration job: `calibration.threads` (1 for a model of tiny tensors)."""
    return int(study_config(wildcards.study).calibration.threads)


def runtime(kind):
    """The `runtime` resource (minutes) of a job of `kind` (simulation, calibration, figures)."""
    return lambda wildcards: int(study_config(wildcards.study).resources.runtime[kind])


def population_agents(cfg, input):
    """Agents of the job's population: population.zarr's count once synthesised, else the toy's `n_agents`, else
    UNSYNTHESISED_AGENTS; 0 for a model without a population."""
    if cfg.get("population") is None:
        return 0
    store = input.get("population") if input is not None else None
    store = store[0] if isinstance(store, (list, tuple)) and store else store
    if store and Path(store).is_dir():
        for metadata in sorted(Path(store).glob("*/zarr.json")):
            array = json.loads(metadata.read_text())
            if array.get("node_type") == "array" and array.get("dimension_names") == ["agent"]:
                return int(array["shape"][0])
    return int(cfg.population.n_agents) if cfg.population.kind == "toy" else UNSYNTHESISED_AGENTS


def calibration_simulations(cfg, mode):
    """(draws, gradients) of a calibration run's simulations: its training steps' and its fit's."""
    settings = cfg.calibration[mode if mode in CALIBRATION_MODES else "flow"]
    return [(settings.draws_per_step * cfg.calibration.get("replicates", 1), True), (cfg.calibration.fit_draws, False)]


# Per rule: the (draws, gradients) of the job's simulations, from its config and wildcards.
SIMULATIONS = {
    "simulate": lambda cfg, w: [(cfg.model.draws, False)],
    "observe": lambda cfg, w: [(1, False)],
    "calibrate": lambda cfg, w: calibration_simulations(cfg, w.get("mode", "flow")),
    "ensemble": lambda cfg, w: calibration_simulations(cfg, "ensemble"),
    # 48 synthetic data sets (diffabm.calibration.weight) × (replicates + 1) simulations in one batch
    "loss_weight": lambda cfg, w: [(48 * (cfg.calibration.get("replicates", 1) + 1), False)],
    "sensitivity": lambda cfg, w: [(cfg.model.draws, True)],
    "counterfactual": lambda cfg, w: [(cfg.counterfactual.draws, False)],
    # model.draws with gradients, and each privacy mode's point calibration
    "private_demo": lambda cfg, w: [(cfg.model.draws, True), *calibration_simulations(cfg, "point")],
}


def mem_mb(rule):
    """The `mem_mb` resource of a job of `rule` (a key of SIMULATIONS)."""

    def estimate(wildcards, input):
        cfg = run_config(wildcards.study, wildcards.get("variant"))
        agents, days = population_agents(cfg, input), int(cfg.model.get("days", 0))
        peak = max(estimated_peak_bytes(agents, int(draws), days, gradients)
                   for draws, gradients in SIMULATIONS[rule](cfg, wildcards))
        return BASE_MB + 100 * -(-int(peak / 1e6) // 100)  # rounded up to 100 MB

    return estimate


def ad_memory_mb(wildcards):
    """The AD memory study's `mem_mb`: its largest cell (reverse mode on `ad_memory.agents` over the most days)."""
    settings = study_config(wildcards.study).ad_memory
    return BASE_MB + int(estimated_peak_bytes(settings.agents, 1, max(settings.days), True) / 1e6)


def calibration_gpus(wildcards):
    """GPUs of a calibration job: `trainer.devices` when `trainer.accelerator` is a GPU, else 0 (none requested)."""
    trainer = study_config(wildcards.study).trainer
    return int(trainer.devices) if trainer.accelerator in ("gpu", "cuda") else 0


def job_attempt(wildcards, attempt):
    """The job's attempt as a resource, so that a calibration resumes its checkpoint only in a retry (attempt > 1:
    `retries`/`--retries` after a failure or a time limit), and `snakemake -f` refits."""
    return attempt


# ------------------------------------------------------------------------------------------ targets of `rule all`


def population_targets(study):
    """The population store, if the study has a population."""
    return [f"results/{study}/population.zarr"] if study_config(study).get("population") is not None else []


def calibration_runs(study):
    """The study's calibration runs: its modes, then flow_<variant> for each variant."""
    calibration = study_config(study).calibration
    return [*calibration.modes, *(f"flow_{variant}" for variant in calibration.get("variants") or {})]


def calibration_targets(study):
    """Outputs of the study's calibration runs, figures and tables."""
    cfg = study_config(study)
    if "calibration" not in cfg:
        return []
    runs = calibration_runs(study)
    return [
        *(f"results/{study}/calibration/{run}/{name}" for run in runs for name in ("posterior.zarr", "fit.zarr")),
        *(f"results/{study}/figures/calibration_{run}.png" for run in runs),
        *([f"results/{study}/calibration/recovery.csv", f"results/{study}/report/recovery.html"]
          if runs else []),
        *(f"results/{study}/calibration/{run}/forecast_scores.csv" for run in runs if "observed" in cfg),
    ]


def gradient_horizon_targets(study):
    """The gradient-horizon study's figures and table, if it has a `gradient_study` section."""
    if study_config(study).get("gradient_study") is None:
        return []
    return [f"results/{study}/gradient_horizon.csv"]


def sensitivity_targets(study):
    """The study's sensitivity store and figure, if it has a `sensitivity` section."""
    if study_config(study).get("sensitivity") is None:
        return []
    return [f"results/{study}/sensitivity.zarr", f"results/{study}/figures/sensitivity.png"]


def sbc_targets(study):
    """The SBC tables and figure, if the study has an `sbc` section."""
    if study_config(study).get("sbc") is None:
        return []
    return [f"results/{study}/sbc/{name}" for name in ("ranks.csv", "summary.csv")] + [
        f"results/{study}/figures/sbc.png"]


def ad_memory_targets(study):
    """The AD memory study's store, tables and figure, if it has an `ad_memory` section."""
    if study_config(study).get("ad_memory") is None:
        return []
    return [f"results/{study}/ad_memory.zarr", f"results/{study}/figures/ad_memory.png"]


def counterfactual_targets(study):
    """The merged counterfactual store, its table and figure, if the study has scenarios."""
    if study_config(study).get("counterfactual") is None:
        return []
    return [f"results/{study}/counterfactuals.zarr", f"results/{study}/counterfactuals.csv",
            f"results/{study}/figures/counterfactuals.png"]


def private_demo_targets(study):
    """The private-demo comparison's table and figure, if the study has a `private_demo` section."""
    if study_config(study).get("private_demo") is None:
        return []
    return [f"results/{study}/private_demo.csv", f"results/{study}/figures/private_demo.png"]


def study_targets(study):
    """Every result of the study (`rule all` less the report's config and benchmark records)."""
    return [
        *population_targets(study),
        f"results/{study}/simulation.zarr",
        f"results/{study}/figures/simulation.png",
        *calibration_targets(study),
        *gradient_horizon_targets(study),
        *sensitivity_targets(study),
        *sbc_targets(study),
        *ad_memory_targets(study),
        *counterfactual_targets(study),
        *private_demo_targets(study),
    ]


def report_targets(study):
    """The report's own items: the resolved config and the jobs' benchmark records."""
    return [f"results/{study}/config.yaml", f"results/{study}/report/config.html", f"results/{study}/benchmarks.csv",
            f"results/{study}/report/benchmarks.html"]


# ------------------------------------------------------------------------------------------------ input functions


def population_input(wildcards):
    """population.zarr for a model on a population; nothing for one without (e.g. Brock & Hommes)."""
    if study_config(wildcards.study).get("population") is None:
        return []
    return [f"results/{wildcards.study}/population.zarr"]


def census_tables(wildcards):
    """Census inputs of the study's population (none for the toy generator), and the Ministry of Health's SA2 file
    (districts, health-service populations and vaccine uptake)."""
    cfg = study_config(wildcards.study)
    if cfg.get("population") is None or cfg.population.kind != "census":
        return []
    tables = sorted(str(path) for path in Path(cfg.population.data_dir).glob("*.parquet"))
    return [*tables, cfg.population.health_service_file]


def record_files(wildcards):
    """Files of real records the study's model and observations read: the `observed:` record and the dose series
    of a vaccination intervention."""
    cfg = study_config(wildcards.study)
    doses = [spec.doses for spec in cfg.get("interventions") or [] if spec.get("kind") == "vaccination"]
    return ([cfg.observed.file] if cfg.get("observed") else []) + doses


def ensemble_members(wildcards):
    """Posteriors of the ensemble's `calibration.ensemble.members` point calibrations."""
    members = study_config(wildcards.study).calibration.ensemble.members
    return [f"results/{wildcards.study}/calibration/ensemble/members/{k}/posterior.zarr" for k in range(members)]


def flow_loss_weight(wildcards):
    """The loss-weight file a flow with `calibration.flow.loss_weight: auto` reads; nothing otherwise."""
    cfg = run_config(wildcards.study, wildcards.get("variant"))
    if wildcards.get("mode", "flow") == "flow" and cfg.calibration.flow.loss_weight == "auto":
        return f"results/{wildcards.study}/calibration/loss_weight.json"
    return []


def calibration_run_stores(wildcards, name):
    """`name` (posterior.zarr, fit.zarr) of each of the study's calibration runs."""
    return [f"results/{wildcards.study}/calibration/{run}/{name}" for run in calibration_runs(wildcards.study)]


def variants(wildcards):
    """The study's flow variants (each estimator's flow; their names those of the gradient study's estimators)."""
    return list(study_config(wildcards.study).calibration.variants)


def variant_stores(wildcards, name):
    """`name` (posterior.zarr or metrics.csv) of each variant's flow."""
    return [f"results/{wildcards.study}/calibration/flow_{variant}/{name}" for variant in variants(wildcards)]


def sensitivity_posterior(wildcards):
    """The posterior whose mean the sensitivity is taken at; nothing for the configured parameters."""
    run = study_config(wildcards.study).sensitivity.posterior
    return [] if run is None else [f"results/{wildcards.study}/calibration/{run}/posterior.zarr"]


def sbc_datasets(wildcards, name):
    """`name` (e.g. observed.zarr, flow/posterior.zarr) of every data set of `sbc.datasets`, in order."""
    datasets = study_config(wildcards.study).sbc.datasets
    return [f"results/{wildcards.study}/sbc/{index}/{name}" for index in range(datasets)]


def sbc_loss_weight_input(wildcards):
    """The data set's loss-weight file, for a flow with `calibration.flow.loss_weight: auto`; nothing otherwise."""
    if wildcards.mode == "flow" and study_config(wildcards.study).calibration.flow.loss_weight == "auto":
        return f"results/{wildcards.study}/sbc/{wildcards.dataset}/loss_weight.json"
    return []


def counterfactual_posterior(wildcards):
    """The posterior whose draws every counterfactual scenario reruns (`counterfactual.posterior`)."""
    run = study_config(wildcards.study).counterfactual.posterior
    return f"results/{wildcards.study}/calibration/{run}/posterior.zarr"


def scenario_stores(wildcards):
    """The store of each scenario of `counterfactual.scenarios`."""
    scenarios = list(study_config(wildcards.study).counterfactual.scenarios)
    return [f"results/{wildcards.study}/counterfactuals/{scenario}.zarr" for scenario in scenarios]
