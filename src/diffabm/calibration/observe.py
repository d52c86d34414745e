"""Stage `observe`: the observed series of a study; synthetic studies simulate them at a known truth.

A synthetic study has a `truth:` section (natural-scale parameters; unlisted ones keep
`model.parameters`) and gets one simulation with the study seed, stored with the truth in attrs.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from omegaconf import DictConfig, OmegaConf

from diffabm.population.schema import read_population
from diffabm.simulation import build_epidemic_model
from diffabm.store import read_dataset, write_dataset

OBSERVED_SERIES = ("new_infections", "infections_by_age", "infections_by_setting", "cases", "hospitalisations",
                   "deaths")
log = logging.getLogger(__name__)
SERIES_DIMS = {name: ("time",) for name in OBSERVED_SERIES} | {"infections_by_age": ("time", "age_group"),
                                                                "infections_by_setting": ("time", "setting")}


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
    log.info("observed at the truth %s: %d infections over %d days", truth, int(ds["new_infections"].sum()),
             ds.sizes["time"])
    ds.attrs["population"] = str(population_path)
    return write_dataset(ds, output_path, cfg, cfg.seed)


def read_observed(path: str | Path, cfg: DictConfig) -> xr.Dataset:
    """`observed.zarr`, checked before any training: every observed series the study's loss compares is present,
    with its dimension names, `model.days` days, numeric, finite and >= 0; a ValueError names the store and series."""
    ds = read_dataset(path)
    missing = [name for name in cfg.calibration.observables if name not in ds]
    if missing:
        raise ValueError(f"observed store {path}: variable '{missing[0]}' (calibration.observables) is missing")
    for name in (name for name in OBSERVED_SERIES if name in ds):
        values = ds[name]
        if values.dims != SERIES_DIMS[name]:
            raise ValueError(f"observed store {path}: variable '{name}' has dimensions {values.dims}, expected "
                             f"{SERIES_DIMS[name]}")
        if values.sizes["time"] != cfg.model.days:
            raise ValueError(f"observed store {path}: variable '{name}' has {values.sizes['time']} days, the model "
                             f"simulates model.days={cfg.model.days}")
        if values.dtype.kind not in "iuf":
            raise ValueError(f"observed store {path}: variable '{name}' has non-numeric dtype {values.dtype}")
        array = values.values.astype(float)
        bad = ~np.isfinite(array) | (array < 0)
        if bad.any():
            index = np.unravel_index(int(np.flatnonzero(bad)[0]), array.shape)
            raise ValueError(f"observed store {path}: variable '{name}' has value {array[index]} at "
                             f"{dict(zip(values.dims, map(int, index)))}, must be finite and >= 0")
    return ds
