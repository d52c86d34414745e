"""Stage `calibrate`: run one calibration mode with a Lightning Trainer and store its results.

Writes under the run directory (`results/<study>/calibration/<mode>/`, or an ensemble member's):
`posterior.zarr` (dimension draw, natural-scale parameters), `fit.zarr` (posterior-predictive
series beside the observed ones), `metrics.csv`, `checkpoints/last.ckpt`, `csv/` and `wandb/` logs.
A rerun with an existing checkpoint of the same configuration resumes from it; simulator seeds
are functions of (seed, step), so the result equals that of an uninterrupted run.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
import xarray as xr
from omegaconf import DictConfig, OmegaConf, read_write
from torch import Tensor

import diffabm
from diffabm.calibration.losses import ObservationLoss
from diffabm.calibration.observe import OBSERVED_SERIES, read_observed
from diffabm.calibration.priors import Prior, build_prior
from diffabm.calibration.target import CalibrationTarget
from diffabm.calibration.weight import read_loss_weight
from diffabm.models.epidemic import stable_seed
from diffabm.population.schema import read_population
from diffabm.simulation import build_epidemic_model
from diffabm.store import (atomic_write_text, content_digest, git_commit, one_line, source_digest,
                           write_dataset)

if TYPE_CHECKING:
    from diffabm.calibration.module import CalibrationModule

MODES = ("point", "calibnn", "ensemble", "flow")
log = logging.getLogger(__name__)


def build_target(cfg: DictConfig, population_path: str | Path, observed: xr.Dataset) -> tuple[CalibrationTarget, Prior]:
    """The calibration target and prior of a study on its population and observed data."""
    model = build_epidemic_model(cfg, read_population(population_path))
    settings = cfg.calibration
    loss = ObservationLoss(settings.loss, {name: torch.as_tensor(observed[name].values) for name in observed.data_vars},
                           list(settings.observables))
    prior = build_prior(OmegaConf.to_container(settings.prior), model.space)
    target = CalibrationTarget(model, prior.names, OmegaConf.to_container(cfg.model.parameters), loss,
                               settings.get("replicates", 1))
    return target, prior


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
    common = dict(target=target, seed=seed, draws_per_step=settings.draws_per_step,
                  steps_per_epoch=settings.steps_per_epoch, lr=settings.lr, weight_decay=settings.weight_decay,
                  lr_schedule=settings.lr_schedule)
    if mode in ("point", "ensemble"):
        from diffabm.calibration.point import PointCalibration

        return PointCalibration(initial=initial_point(prior, settings.initial, seed), **common)
    if mode == "calibnn":
        from diffabm.calibration.calibnn import CalibNNCalibration

        return CalibNNCalibration(initial=initial_point(prior, settings.initial, seed),
                                  hidden_features=list(settings.hidden_features), weekly=settings.weekly, **common)
    if mode == "flow":
        from diffabm.calibration.flow import FlowCalibration

        return FlowCalibration(prior=prior, loss_weight=settings.loss_weight, transforms=settings.transforms,
                               hidden_features=list(settings.hidden_features), estimator=settings.estimator,
                               loss_weight_warmup=settings.loss_weight_warmup, kl_gradient=settings.kl_gradient,
                               **common)
    raise ValueError(f"unknown calibration mode {mode!r}; choose from {MODES}")


def resumable_checkpoint(checkpoint_dir: Path, run_config: str, epochs: int) -> Path | None:
    """`last.ckpt` if it was written by the same run configuration and not beyond `epochs`; else clear it.

    The checkpoint is read with `weights_only=True` (tensors and plain containers only), so a planted file
    cannot run code; one that does not load that way is an error naming it.
    """
    last, recorded = checkpoint_dir / "last.ckpt", checkpoint_dir / "run_config.yaml"
    if last.exists() and recorded.exists() and recorded.read_text() == run_config:
        try:
            epoch = torch.load(last, map_location="cpu", weights_only=True)["epoch"]
        except Exception as err:  # noqa: BLE001 - unpickling refused, truncated file, missing key: all one answer
            raise ValueError(f"checkpoint {last} cannot be loaded safely ({one_line(err)}); delete it to start "
                             f"afresh") from err
        if epoch <= epochs:
            log.info("resuming from %s (epoch %d)", last, epoch)
            return last
    if checkpoint_dir.exists():
        log.info("starting afresh: %s holds no checkpoint of this run configuration and its inputs", checkpoint_dir)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    atomic_write_text(recorded, run_config)
    return None


def run_configuration(cfg: DictConfig, mode: str, seed: int, inputs: Mapping[str, str | Path | None]) -> str:
    """Everything a run's result depends on, as YAML, the key under which its checkpoint may be resumed:
    the resolved config (all but the number of epochs, which a constant learning rate lets a rerun extend;
    a decaying one depends on it), the run seed, a content digest of every input store or file, and the
    package's version, git commit and source digest. Any change starts a fresh run."""
    container = OmegaConf.to_container(cfg, resolve=True)
    if container["calibration"][mode]["lr_schedule"] == "constant":
        container["calibration"][mode].pop("epochs")
    container["run"] = {
        "seed": seed,
        "inputs": {name: content_digest(path) for name, path in inputs.items() if path is not None},
        "diffabm_version": diffabm.__version__,
        "git_commit": git_commit(),
        "source": source_digest(),
    }
    return OmegaConf.to_yaml(OmegaConf.create(container))


def loggers(cfg: DictConfig, run_dir: Path, name: str) -> list:
    """Lightning loggers named in `calibration.loggers` (csv, wandb; W&B offline by default)."""
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    chosen = []
    for kind in cfg.calibration.loggers:
        if kind == "csv":
            chosen.append(CSVLogger(run_dir, name="csv"))
        elif kind == "wandb":
            os.environ.setdefault("WANDB_MODE", "offline")
            chosen.append(WandbLogger(name=name, project=f"diffabm-{cfg.study}", save_dir=str(run_dir),
                                      config=OmegaConf.to_container(cfg, resolve=True)))
        else:
            raise ValueError(f"calibration.loggers: unknown logger {kind!r}; choose csv or wandb")
    return chosen


def merged_metrics(csv_dir: Path) -> pd.DataFrame:
    """Metrics of all (resumed) CSVLogger versions, each cut where the next one resumed."""
    versions = sorted(csv_dir.glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    frames = [pd.read_csv(path) for path in versions if path.stat().st_size]
    kept = [frame[frame["step"] < later["step"].min()] for frame, later in zip(frames[:-1], frames[1:])]
    return pd.concat([*kept, *frames[-1:]], ignore_index=True) if frames else pd.DataFrame()


def train(cfg: DictConfig, mode: str, target: CalibrationTarget, prior: Prior, run_dir: Path, seed: int,
          run_name: str, inputs: Mapping[str, str | Path | None] | None = None) -> CalibrationModule:
    """Fit `mode` with a Lightning Trainer, resuming from the run's last checkpoint if it has the same
    configuration and `inputs` (name: store or file path; see `run_configuration`)."""
    import lightning as L
    from lightning.fabric.utilities.warnings import PossibleUserWarning
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    settings = cfg.calibration[mode]
    # The loader yields step indices only; worker processes would not help.
    warnings.filterwarnings("ignore", message=".*does not have many workers.*", category=PossibleUserWarning)
    # The checkpoint directory holds the run's own `last.ckpt` and run_config.yaml: resuming is the point.
    warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
    # Lightning prints through its own handler; passing its records on to the root logger too would repeat them.
    logging.getLogger("lightning.pytorch").propagate = False
    L.seed_everything(seed, verbose=False)
    module = build_module(mode, settings, target, prior, seed)
    checkpoint_dir = run_dir / "checkpoints"
    resume = resumable_checkpoint(checkpoint_dir, run_configuration(cfg, mode, seed, inputs or {}), settings.epochs)
    trainer = L.Trainer(
        max_epochs=settings.epochs,
        accelerator="cpu",
        logger=loggers(cfg, run_dir, run_name),
        # `last.ckpt` rewritten every epoch (save_last alone writes it only when training ends).
        callbacks=[ModelCheckpoint(dirpath=checkpoint_dir, filename="last", save_top_k=1, every_n_epochs=1,
                                   enable_version_counter=False),
                   LearningRateMonitor(logging_interval="step")],
        log_every_n_steps=1,
        # A progress bar redraws with carriage returns: only on a terminal, never in a job's log file.
        enable_progress_bar=cfg.calibration.progress_bar and sys.stderr.isatty(),
        enable_model_summary=False,
        default_root_dir=run_dir,
    )
    trainer.fit(module, ckpt_path=resume, weights_only=True)
    merged_metrics(run_dir / "csv").to_csv(run_dir / "metrics.csv", index=False)
    return module


def posterior_dataset(target: CalibrationTarget, theta: Tensor, mode: str, observed: xr.Dataset,
                      transmission_multiplier: Tensor | None = None) -> xr.Dataset:
    """Natural-scale draws (dimension draw) of the calibrated parameters, and any daily multiplier of β."""
    natural = target.natural(theta)
    ds = xr.Dataset({name: ("draw", natural[name].detach().numpy()) for name in target.names},
                    coords={"draw": np.arange(theta.shape[0])})
    if transmission_multiplier is not None:
        ds["transmission_multiplier"] = (("draw", "time"), transmission_multiplier.detach().numpy())
        ds = ds.assign_coords(time=observed.time.values)
    ds.attrs.update(mode=mode, **({"truth": observed.attrs["truth"]} if "truth" in observed.attrs else {}))
    return ds


def fit_dataset(target: CalibrationTarget, theta: Tensor, draws: int, seed: int, observed: xr.Dataset,
                transmission_multiplier: Tensor | None = None) -> xr.Dataset:
    """Posterior-predictive series at `draws` draws of θ (cycled), the observed series and the losses.

    With a known truth, `truth_loss` holds the loss of the truth under the same simulator noise.
    """
    index = torch.arange(draws) % theta.shape[0]
    chosen = theta[index]
    daily = None if transmission_multiplier is None else transmission_multiplier[index]
    fit_seed = stable_seed(seed, "fit")
    with torch.no_grad():
        output = target.simulate(chosen, fit_seed, daily)
        simulated = {name: getattr(output, name) for name in OBSERVED_SERIES}
        ds = xr.Dataset({name: (("draw", *observed[name].dims), values.numpy()) for name, values in simulated.items()},
                        coords={"draw": np.arange(draws), **observed.coords})
        ds["loss"] = ("draw", target.losses(chosen, fit_seed, daily).numpy())
        for name, values in target.natural(chosen).items():
            ds[name] = ("draw", values.numpy())
        if "truth" in observed.attrs:
            truth = target.unconstrained(observed.attrs["truth"]).expand(draws, -1)
            ds["truth_loss"] = ("draw", target.losses(truth, fit_seed).numpy())
    for name in OBSERVED_SERIES:
        ds[f"observed_{name}"] = observed[name]
    ds.attrs.update(observables=list(target.loss.observed), loss=target.loss.kind)
    return ds


def with_loss_weight(cfg: DictConfig, mode: str, loss_weight_path: str | Path | None) -> DictConfig:
    """`cfg` with the flow's `loss_weight: auto` replaced by the value in `loss_weight_path` (stage `loss_weight`)."""
    if mode != "flow" or cfg.calibration.flow.loss_weight != "auto":
        return cfg
    if loss_weight_path is None:
        raise ValueError("calibration.flow.loss_weight: 'auto' needs the file written by the loss_weight stage "
                         "(rule loss_weight, or `diffabm calibrate --loss-weight FILE`)")
    cfg = cfg.copy()
    with read_write(cfg):
        cfg.calibration.flow.loss_weight = read_loss_weight(loss_weight_path)
    return cfg


def calibrate(cfg: DictConfig, mode: str, population_path: str | Path, observed_path: str | Path,
              run_dir: str | Path, loss_weight_path: str | Path | None = None, member: int | None = None) -> Path:
    """Calibrate `mode` (an ensemble member if `member` is given); write the run's outputs to `run_dir`.

    A flow with `loss_weight: auto` takes w from `loss_weight_path`. Inputs are checked before `run_dir` is made.
    """
    if mode not in MODES or (mode == "ensemble") != (member is not None):
        raise ValueError(f"calibration mode is {mode!r}{'' if member is None else f' (member {member})'}; choose from "
                         f"{[m for m in MODES if m != 'ensemble']} (ensemble runs as members)")
    run_dir = Path(run_dir)
    cfg = with_loss_weight(cfg, mode, loss_weight_path)
    observed = read_observed(observed_path, cfg)
    target, prior = build_target(cfg, population_path, observed)
    seed = int(cfg.seed) + (member or 0)
    run_name = f"{cfg.study}-{mode}" + (f"-{member}" if member is not None else "")
    log.info("calibrating %s (run seed %d) of study %s in %s", mode, seed, cfg.study, run_dir)
    inputs = {"population": population_path, "observed": observed_path, "loss_weight": loss_weight_path}
    module = train(cfg, mode, target, prior, run_dir, seed, run_name, inputs)
    settings = cfg.calibration[mode]
    theta = module.posterior_draws(settings.get("posterior_draws", 1), stable_seed(seed, "posterior"))
    with torch.no_grad():
        daily = module.transmission_multiplier(theta.shape[0])
    write_dataset(posterior_dataset(target, theta, mode, observed, daily), run_dir / "posterior.zarr", cfg, seed)
    if member is None:
        write_dataset(fit_dataset(target, theta, cfg.calibration.fit_draws, seed, observed, daily),
                      run_dir / "fit.zarr", cfg, seed)
    return run_dir
