"""Stage `observe`: the observed series of a study, from a real record or simulated at a known truth.

A study with an `observed:` section reads its series from a record (`diffabm.calibration.records`, e.g. the
Ministry of Health's daily reported cases). A synthetic study has a `truth:` section (natural-scale parameters;
unlisted ones keep
`model.parameters`) and gets one simulation with the study seed, stored with the truth in attrs:
every observable of the model, with its dimensions after `draw` (e.g. `time`, `age_group`).
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from omegaconf import DictConfig, OmegaConf

from diffabm.build import build_model
from diffabm.calibration.records import read_record
from diffabm.models.base import Simulator
from diffabm.store import read_dataset, write_dataset

log = logging.getLogger(__name__)


def truth_parameters(cfg: DictConfig, model: Simulator) -> dict[str, float]:
    """The study's true natural-scale parameters: the model's defaults updated by `truth`."""
    if not cfg.get("truth"):
        raise ValueError(
            f"study {cfg.study!r}: observe needs a `truth:` section (only synthetic observations are supported so far)"
        )
    unknown = sorted(set(cfg.truth) - set(model.defaults))
    if unknown:
        raise ValueError(f"truth: unknown parameters {unknown}; model parameters are {sorted(model.defaults)}")
    return {**model.defaults, **{name: float(value) for name, value in cfg.truth.items()}}


def observe(cfg: DictConfig, population_path: str | Path | None, output_path: str | Path) -> Path:
    """Simulate the study's truth once (seed `cfg.seed`); write `observed.zarr` (the model's observables).
    `population_path` is None for a model without a population."""
    model = build_model(cfg, population_path)
    if cfg.get("observed"):
        return write_record(cfg, model, output_path)
    truth = truth_parameters(cfg, model)
    with torch.no_grad():
        output = model.simulate({name: torch.tensor([value]) for name, value in truth.items()}, seed=cfg.seed)
    ds = model.to_dataset(output).isel(draw=0, drop=True)
    ds.attrs["truth"] = truth
    log.info(
        "observed at the truth %s: %s",
        truth,
        ", ".join(f"{name} total {float(ds[name].sum()):.4g}" for name in ds.data_vars),
    )
    return write_dataset(ds, output_path, cfg, cfg.seed)


def write_record(cfg: DictConfig, model: Simulator, output_path: str | Path) -> Path:
    """`observed.zarr` from the study's record (`observed:`), on the model's time axis, with the record's settings
    in attrs."""
    model_coords = model.coords()
    time = model_coords["time"]
    series = read_record(cfg.observed, dt.date.fromisoformat(str(cfg.start_date)), len(time))
    unknown = [name for name in series if name not in model.observables]
    if unknown:
        raise ValueError(
            f"observed.kind {cfg.observed.kind!r} gives {unknown[0]!r}, not an observable of the model "
            f"(case reporting needs model.parameters ascertainment and reporting_delay)"
        )
    coords = {"time": time}
    if "reported_cases_by_district" in series:  # the record's locations are the model's districts, in its order
        districts = list(model_coords["district"])
        if sorted(cfg.observed.locations) != sorted(districts):
            raise ValueError(
                f"observed.locations is {list(cfg.observed.locations)}, but the population's districts "
                f"are {districts}; by_district needs the same names"
            )
        order = [list(cfg.observed.locations).index(name) for name in districts]
        series["reported_cases_by_district"] = series["reported_cases_by_district"][:, order]
        coords["district"] = model_coords["district"]
    ds = xr.Dataset({name: (model.observables[name], values) for name, values in series.items()}, coords=coords)
    ds.attrs["record"] = OmegaConf.to_container(cfg.observed, resolve=True)
    log.info(
        "observed from %s: %s",
        cfg.observed.file,
        ", ".join(f"{name} total {float(ds[name].sum()):.4g}" for name in ds.data_vars),
    )
    return write_dataset(ds, output_path, cfg, cfg.seed)


def read_observed(path: str | Path, cfg: DictConfig, model: Simulator) -> xr.Dataset:
    """`observed.zarr`, checked before any training: every observed series the study's loss compares is present,
    and each observable of the model that is there has the model's dimension names and sizes, numeric, finite
    and >= 0 values (a count; a model whose observables may be negative says so in `signed_observables`);
    a ValueError names the store and the variable."""
    ds = read_dataset(path)
    missing = [name for name in cfg.calibration.observables if name not in ds]
    if missing:
        raise ValueError(f"observed store {path}: variable '{missing[0]}' (calibration.observables) is missing")
    sizes = {dim: len(values) for dim, values in model.coords().items()}
    for name in (name for name in model.observables if name in ds):
        values, dims = ds[name], model.observables[name]
        if values.dims != dims:
            raise ValueError(f"observed store {path}: variable '{name}' has dimensions {values.dims}, expected {dims}")
        for dim in dims:
            if values.sizes[dim] != sizes[dim]:
                raise ValueError(
                    f"observed store {path}: variable '{name}' has {values.sizes[dim]} values along "
                    f"'{dim}', the model has {sizes[dim]}"
                )
        if values.dtype.kind not in "iuf":
            raise ValueError(f"observed store {path}: variable '{name}' has non-numeric dtype {values.dtype}")
        array = values.values.astype(float)
        bad = ~np.isfinite(array) | ((array < 0) & (name not in model.signed_observables))
        if bad.any():
            index = np.unravel_index(int(np.flatnonzero(bad)[0]), array.shape)
            limit = "finite" if name in model.signed_observables else "finite and >= 0"
            raise ValueError(
                f"observed store {path}: variable '{name}' has value {array[index]} at "
                f"{dict(zip(values.dims, map(int, index)))}, must be {limit}"
            )
    return ds
