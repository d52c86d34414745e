"""Stage `simulate`: run the epidemic model on a population and store the daily outputs."""

from __future__ import annotations

import dataclasses
import logging
import datetime as dt
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from diffabm.models.epidemic import EpidemicModel, disease_course
from diffabm.models.interventions import build_interventions
from diffabm.population.schema import Population, read_population
from diffabm.registry import instantiate
from diffabm.store import write_dataset


log = logging.getLogger(__name__)


def with_attribute_layers(population: Population, attribute_layers: dict[str, str]) -> Population:
    """Add layers that group agents sharing an attribute (e.g. `community: area`)."""
    groups = dict(population.groups)
    for layer, attribute in attribute_layers.items():
        if layer in groups:
            raise ValueError(f"model.attribute_layers: layer '{layer}' already exists in the population")
        values = getattr(population, attribute, population.extra.get(attribute))
        if values is None:
            raise ValueError(f"model.attribute_layers.{layer}: population has no attribute '{attribute}'")
        groups[layer] = np.unique(values, return_inverse=True)[1].astype(np.int64)
    return dataclasses.replace(population, groups=groups)


def build_epidemic_model(cfg: DictConfig, population: Population, device: str = "cpu") -> EpidemicModel:
    """The epidemic model of a study config (`model`, `interventions`, `start_date`) on `population`."""
    model_cfg = cfg.model
    population = with_attribute_layers(population, dict(model_cfg.get("attribute_layers") or {}))
    parameters = OmegaConf.to_container(model_cfg.parameters)
    expected = {f"beta_{layer}" for layer in population.layers}
    given = {name for name in parameters if name.startswith("beta_")}
    if given != expected:
        raise ValueError(f"model.parameters: population layers need {sorted(expected)}, config gives "
                         f"{sorted(given)}")
    start = dt.date.fromisoformat(str(cfg.start_date))
    interventions = build_interventions(OmegaConf.to_container(cfg.interventions), model_cfg.days,
                                        population.layers, start)
    return EpidemicModel(
        population,
        disease_course(OmegaConf.to_container(model_cfg.course)),
        days=model_cfg.days,
        parameters=parameters,
        estimator=instantiate(model_cfg.estimator, "model.estimator"),
        interventions=interventions,
        draws=model_cfg.draws,
        common_random_numbers=model_cfg.common_random_numbers,
        seeding=model_cfg.seeding,
        device=device,
        max_memory_gb=cfg.get("resources", {}).get("max_memory_gb"),
    )


def simulate(cfg: DictConfig, population_path: str | Path, output_path: str | Path) -> Path:
    """Simulate `cfg.model.draws` draws at the configured parameters; write `simulation.zarr`."""
    model = build_epidemic_model(cfg, read_population(population_path))
    with torch.no_grad():
        output = model(seed=cfg.seed)
        parameters = model.natural_parameters()
    ds = output.to_dataset(dt.date.fromisoformat(str(cfg.start_date)), parameters)
    totals = output.new_infections.sum(1)
    log.info("simulated %d draws × %d agents × %d days: total infections %s", totals.numel(), model.n_agents,
             model.days, totals.long().tolist())
    ds.attrs["population"] = str(population_path)
    return write_dataset(ds, output_path, cfg, cfg.seed)
