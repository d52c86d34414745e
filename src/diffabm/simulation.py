"""Stage `simulate`: run the study's model at its configured parameters and store the outputs."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from diffabm.build import build_model
from diffabm.store import write_dataset

log = logging.getLogger(__name__)


def simulate(cfg: DictConfig, population_path: str | Path | None, output_path: str | Path) -> Path:
    """Simulate `cfg.model.draws` draws at the configured parameters; write `simulation.zarr`.
    `population_path` is None for a model without a population."""
    model = build_model(cfg, population_path)
    parameters = model.natural_parameters()
    with torch.no_grad():
        output = model.simulate(parameters, seed=cfg.seed)
    ds = model.to_dataset(output, parameters)
    log.info(
        "simulated %d draws of %s: %s",
        model.draws,
        type(model).__name__,
        ", ".join(
            f"{name} total {ds[name].sum(set(ds[name].dims) - {'draw'}).values.round(3).tolist()}"
            for name in list(model.observables)[:2]
        ),
    )
    if population_path is not None:
        ds.attrs["population"] = str(population_path)
    return write_dataset(ds, output_path, cfg, cfg.seed)
