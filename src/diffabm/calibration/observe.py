"""Stage `observe`: the observed series of a study; synthetic studies simulate them at a known truth.

A synthetic study has a `truth:` section (natural-scale parameters; unlisted ones keep
`model.parameters`) and gets one simulation with the study seed, stored with the truth in attrs.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from diffabm.population.schema import read_population
from diffabm.simulation import build_epidemic_model
from diffabm.store import write_dataset

OBSERVED_SERIES = ("new_infections", "infections_by_age", "infections_by_setting", "cases", "hospitalisations",
                   "deaths")


def truth_parameters(cfg: DictConfig) -> dict[str, float]:
    """The study's true natural-scale parameters: `model.parameters` updated by `truth`."""
    if not cfg.get("truth"):
        raise ValueError(f"study {cfg.study!r}: observe needs a `truth:` section (only synthetic observations "
                         f"are supported so far)")
    parameters = OmegaConf.to_container(cfg.model.parameters)
    unknown = sorted(set(cfg.truth) - set(parameters))
    if unknown:
        raise ValueError(f"truth: unknown parameters {unknown}; model parameters are {sorted(parameters)}")
    return {name: float(value) for name, value in {**parameters, **cfg.truth}.items()}


def observe(cfg: DictConfig, population_path: str | Path, output_path: str | Path) -> Path:
    """Simulate the study's truth once (seed `cfg.seed`); write `observed.zarr` (dimension time)."""
    truth = truth_parameters(cfg)
    model = build_epidemic_model(cfg, read_population(population_path))
    with torch.no_grad():
        output = model.simulate({name: torch.tensor([value]) for name, value in truth.items()}, seed=cfg.seed)
    ds = output.to_dataset(dt.date.fromisoformat(str(cfg.start_date)))[list(OBSERVED_SERIES)].isel(draw=0, drop=True)
    ds.attrs["truth"] = truth
    ds.attrs["population"] = str(population_path)
    return write_dataset(ds, output_path, cfg, cfg.seed)
