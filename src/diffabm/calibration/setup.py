"""What a calibration run is built from: the study's model, observed data, prior, loss and the
LightningModule of its mode (`MODES`: one class per mode, no model named)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import xarray as xr
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from diffabm.build import build_model
from diffabm.calibration.losses import ObservationLoss
from diffabm.calibration.observe import read_observed
from diffabm.calibration.priors import Prior, build_prior
from diffabm.calibration.target import CalibrationTarget
from diffabm.models.base import Simulator

if TYPE_CHECKING:
    from diffabm.calibration.module import CalibrationModule

# mode: the LightningModule that fits it (imported when used: Lightning is slow to import)
MODES = {
    "point": "diffabm.calibration.point:PointCalibration",
    "calibnn": "diffabm.calibration.calibnn:CalibNNCalibration",
    "ensemble": "diffabm.calibration.point:PointCalibration",
    "flow": "diffabm.calibration.flow:FlowCalibration",
}


def build_target(cfg: DictConfig, model: Simulator, observed: xr.Dataset) -> tuple[CalibrationTarget, Prior]:
    """The calibration target and prior of a study's model and observed data."""
    settings = cfg.calibration
    loss = ObservationLoss(settings.loss, {name: torch.as_tensor(observed[name].values) for name in settings.observables},
                           list(settings.observables))
    prior = build_prior(OmegaConf.to_container(settings.prior), model.space, model.device)
    target = CalibrationTarget(model, prior.names, model.defaults, loss, settings.get("replicates", 1))
    return target, prior


def load_target(cfg: DictConfig, population_path: str | Path | None, observed_path: str | Path
                ) -> tuple[CalibrationTarget, Prior, xr.Dataset]:
    """Target, prior and the checked observed data of a study from its stores (population: None if the
    model needs none)."""
    model = build_model(cfg, population_path)
    observed = read_observed(observed_path, cfg, model)
    return (*build_target(cfg, model, observed), observed)


def initial_point(prior: Prior, how: str, seed: int) -> Tensor:
    """Starting θ (d,): the prior mean on the unconstrained scale, or one prior draw."""
    if how == "prior_mean":
        return prior.sample(4096, seed).mean(0)
    if how == "prior_sample":
        return prior.sample(1, seed)[0]
    raise ValueError(f"calibration: unknown initial {how!r}; choose prior_mean or prior_sample")


def build_module(mode: str, settings: DictConfig, target: CalibrationTarget, prior: Prior, seed: int
                 ) -> CalibrationModule:
    """The LightningModule of `mode` with its settings (`cfg.calibration.<mode>`)."""
    if mode not in MODES:
        raise ValueError(f"unknown calibration mode {mode!r}; choose from {sorted(MODES)}")
    module, name = MODES[mode].split(":")
    cls = getattr(importlib.import_module(module), name)
    common = dict(target=target, seed=seed, draws_per_step=settings.draws_per_step,
                  steps_per_epoch=settings.steps_per_epoch, lr=settings.lr, weight_decay=settings.weight_decay,
                  lr_schedule=settings.lr_schedule)
    if mode in ("point", "ensemble"):
        return cls(initial=initial_point(prior, settings.initial, seed), **common)
    if mode == "calibnn":
        return cls(initial=initial_point(prior, settings.initial, seed), hidden_features=list(settings.hidden_features),
                   control=settings.control, **common)
    return cls(prior=prior, loss_weight=settings.loss_weight, transforms=settings.transforms,
               hidden_features=list(settings.hidden_features), estimator=settings.estimator,
               loss_weight_warmup=settings.loss_weight_warmup, kl_gradient=settings.kl_gradient, **common)
