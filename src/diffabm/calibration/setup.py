"""What a calibration run is built from: the study's model, observed data, prior, loss and the
LightningModule of its mode (built from its `_target_`; no model named)."""

from __future__ import annotations

import inspect
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
from diffabm.models.autodiff import AutoDiff
from diffabm.models.base import Simulator
from diffabm.registry import instantiate

if TYPE_CHECKING:
    from diffabm.calibration.module import CalibrationModule

MODES = ("point", "calibnn", "ensemble", "flow")  # each `cfg.calibration.<mode>` names its LightningModule by _target_


def build_target(cfg: DictConfig, model: Simulator, observed: xr.Dataset) -> tuple[CalibrationTarget, Prior]:
    """The calibration target and prior of a study's model and observed data."""
    settings = cfg.calibration
    loss = ObservationLoss(
        settings.loss,
        {name: torch.as_tensor(observed[name].values) for name in settings.observables},
        list(settings.observables),
        settings.get("holdout_days", 0),
    )
    prior = build_prior(OmegaConf.to_container(settings.prior), model.space, model.device)
    target = CalibrationTarget(
        model,
        prior.names,
        model.defaults,
        loss,
        settings.get("replicates", 1),
        settings.get("gradients", "autograd"),
        settings.get("alternatives", 1),
        settings.get("step", 0.05),
        AutoDiff.from_config(cfg.get("ad")),
    )
    return target, prior


def load_target(
    cfg: DictConfig, population_path: str | Path | None, observed_path: str | Path
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


def build_module(
    mode: str, settings: DictConfig, target: CalibrationTarget, prior: Prior, seed: int
) -> CalibrationModule:
    """The LightningModule of `mode`: `settings._target_` (`cfg.calibration.<mode>`, allow-listed) built with the
    settings its constructor takes (the others, e.g. `epochs`, belong to the Trainer and the stage), the run's
    target, prior and seed, and `initial` (`prior_mean` | `prior_sample`) as a starting θ."""
    if mode not in MODES:
        raise ValueError(f"unknown calibration mode {mode!r}; choose from {list(MODES)}")
    factory = instantiate({"_target_": settings._target_}, f"calibration.{mode}", _partial_=True)
    accepted = inspect.signature(factory.func).parameters
    runtime = {"target": target, "prior": prior, "seed": seed}
    if "initial" in accepted:
        runtime["initial"] = initial_point(prior, settings.initial, seed)
    chosen = {
        name: value
        for name, value in OmegaConf.to_container(settings, resolve=True).items()
        if name in accepted and name not in runtime
    }
    return factory(**chosen, **{name: value for name, value in runtime.items() if name in accepted})
