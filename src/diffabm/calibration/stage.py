"""Stage `calibrate`: run one calibration mode with a Lightning Trainer and store its results.

Writes under the run directory (`results/<study>/calibration/<mode>/`, or an ensemble member's):
`posterior.zarr` (dimension draw, natural-scale parameters, and any calibrated controls), `fit.zarr`
(posterior-predictive series beside the observed ones), `metrics.csv`, `checkpoints/last.ckpt`,
`csv/` and `wandb/` logs. Resumption (only a retry, `resume=True`): `diffabm.calibration.training`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, read_write

from diffabm.calibration.datasets import fit_dataset, posterior_dataset
from diffabm.calibration.setup import MODES, load_target
from diffabm.calibration.training import train
from diffabm.calibration.weight import read_loss_weight
from diffabm.models.base import stable_seed
from diffabm.store import write_dataset

log = logging.getLogger(__name__)


def with_loss_weight(cfg: DictConfig, mode: str, loss_weight_path: str | Path | None) -> DictConfig:
    """`cfg` with the flow's `loss_weight: auto` replaced by the value in `loss_weight_path` (stage `loss_weight`)."""
    if mode != "flow" or cfg.calibration.flow.loss_weight != "auto":
        return cfg
    if loss_weight_path is None:
        raise ValueError(
            "calibration.flow.loss_weight: 'auto' needs the file written by the loss_weight stage "
            "(rule loss_weight, or `diffabm calibrate --loss-weight FILE`)"
        )
    cfg = cfg.copy()
    with read_write(cfg):
        cfg.calibration.flow.loss_weight = read_loss_weight(loss_weight_path)
    return cfg


def calibrate(
    cfg: DictConfig,
    mode: str,
    population_path: str | Path | None,
    observed_path: str | Path,
    run_dir: str | Path,
    loss_weight_path: str | Path | None = None,
    member: int | None = None,
    resume: bool = False,
) -> Path:
    """Calibrate `mode` (an ensemble member if `member` is given); write the run's outputs to `run_dir`.

    `resume`: a retry of the same run (Snakemake's attempt > 1, `diffabm calibrate --resume`) continues from
    the run's `checkpoints/last.ckpt` if it has the same run key; otherwise the run starts afresh and deletes
    any checkpoint (`snakemake -f` refits).

    A flow with `loss_weight: auto` takes w from `loss_weight_path`. Inputs are checked before `run_dir` is
    made. `population_path` is None for a model without a population.
    """
    if mode not in MODES or (mode == "ensemble") != (member is not None):
        raise ValueError(
            f"calibration mode is {mode!r}{'' if member is None else f' (member {member})'}; choose from "
            f"{[m for m in MODES if m != 'ensemble']} (ensemble runs as members)"
        )
    run_dir = Path(run_dir)
    cfg = with_loss_weight(cfg, mode, loss_weight_path)
    target, prior, observed = load_target(cfg, population_path, observed_path)
    if mode == "calibnn" and cfg.calibration.calibnn.get("control"):
        target.ad.check_controls([cfg.calibration.calibnn.control])
    seed = int(cfg.seed) + (member or 0)
    run_name = f"{cfg.study}-{mode}" + (f"-{member}" if member is not None else "")
    log.info("calibrating %s (run seed %d) of study %s in %s", mode, seed, cfg.study, run_dir)
    inputs = {"population": population_path, "observed": observed_path, "loss_weight": loss_weight_path}
    module = train(cfg, mode, target, prior, run_dir, seed, run_name, inputs, resume)
    settings = cfg.calibration[mode]
    theta = module.posterior_draws(settings.get("posterior_draws", 1), stable_seed(seed, "posterior"))
    with torch.no_grad():
        controls = module.controls(theta.shape[0])
    write_dataset(posterior_dataset(target, theta, mode, observed, controls), run_dir / "posterior.zarr", cfg, seed)
    if member is None:
        write_dataset(
            fit_dataset(target, theta, cfg.calibration.fit_draws, seed, observed, controls),
            run_dir / "fit.zarr",
            cfg,
            seed,
        )
    return run_dir
