"""Objects of a study built from its config: the model (`cfg.model._target_`, with the study's population
when it has one), the Lightning Trainer (`cfg.trainer`) and the loggers (`cfg.logger`), all through the
`_target_` allow-list of `diffabm.registry`, as lightning-hydra-template builds them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from diffabm.models.base import Simulator
from diffabm.registry import instantiate


def needs_population(cfg: DictConfig) -> bool:
    """Whether the study's model runs on a synthetic population (a `population` section)."""
    return cfg.get("population") is not None


def device_of(cfg: DictConfig) -> str:
    """The torch device of the study's Trainer accelerator (`trainer.accelerator`: cpu | gpu | cuda)."""
    return "cuda" if str(cfg.trainer.accelerator) in ("gpu", "cuda") else "cpu"


def build_model(cfg: DictConfig, population: str | Path | Any = None, device: str | None = None) -> Simulator:
    """The study's model; a model on a population reads it from `population` (the path of population.zarr, or a
    `Population` already in memory)."""
    runtime: dict[str, Any] = {"device": device or device_of(cfg)}
    if needs_population(cfg):
        if population is None:
            raise ValueError(f"study {cfg.study!r}: model {cfg.model._target_} needs a population (population.zarr)")
        if isinstance(population, (str, Path)):
            from diffabm.population.schema import read_population

            population = read_population(population)
        runtime["population"] = population
    elif population is not None:
        raise ValueError(f"study {cfg.study!r} has no population section, but a population was given: {population}")
    # Run-time objects go to the partial, not through instantiate, which would turn them into config.
    model = instantiate(cfg.model, "model", _partial_=True, _convert_="all")(**runtime)
    if not isinstance(model, Simulator):
        raise ValueError(f"model._target_ {cfg.model._target_} is not a diffabm Simulator")
    return model


def build_trainer(cfg: DictConfig, **runtime: Any) -> Any:
    """The Lightning Trainer of `cfg.trainer` (accelerator, devices, ...) with run-time arguments (epochs,
    loggers, callbacks)."""
    return instantiate(cfg.trainer, "trainer", _partial_=True, _convert_="all")(**runtime)


def build_loggers(cfg: DictConfig, run_dir: Path, name: str, mode: str) -> list:
    """The Lightning loggers named in `calibration.loggers`, each from `cfg.logger.<name>`. A W&B run is grouped by
    study and tagged with study and mode, and its id is the run's name, so a rerun of a job is that run again
    (`resume: allow`) rather than one more."""
    import os

    unknown = [kind for kind in cfg.calibration.loggers if kind not in cfg.logger]
    if unknown:
        raise ValueError(f"calibration.loggers: unknown logger {unknown[0]!r}; configured: {sorted(cfg.logger)}")
    if "wandb" in cfg.calibration.loggers:
        os.environ.setdefault("WANDB_MODE", "offline")
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(cfg, resolve=True)
    runtime = {
        "csv": {"save_dir": str(run_dir)},
        "wandb": {
            "save_dir": str(run_dir),
            "name": name,
            "id": name,
            "resume": "allow",
            "group": str(cfg.study),
            "job_type": mode,
            "tags": [str(cfg.study), mode],
            "config": config,
        },
    }
    return [
        instantiate(cfg.logger[kind], f"logger.{kind}", _partial_=True, _convert_="all")(**runtime.get(kind, {}))
        for kind in cfg.calibration.loggers
    ]
