"""The GVI loss weight w from the sampling distribution of the loss (Satterthwaite 1946, Biometrics 2:110).

Simulate data sets at a fitted θ̂, take each one's loss against the mean of `replicates` fresh
simulations, and treat the loss as a scaled χ² with n_eff degrees of freedom: matching mean and
variance gives n_eff = 2 E[ℓ]² / Var[ℓ] and w = E[ℓ] / Var[ℓ], so that w · ℓ ≈ ½ χ²_{n_eff},
a negative log-likelihood. The days of an epidemic are strongly correlated, so n_eff is far below
the number of observed cells and w far below the 1 / (2σ²) of independent cells.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import Tensor

from diffabm.calibration.datasets import read_posterior
from diffabm.calibration.losses import ObservationLoss
from diffabm.calibration.setup import load_target
from diffabm.calibration.target import CalibrationTarget
from diffabm.store import atomic_write_text, provenance

log = logging.getLogger(__name__)


def bootstrap_losses(target: CalibrationTarget, theta: Tensor, datasets: int, seed: int) -> Tensor:
    """Losses (datasets,) of data sets simulated at θ (d,), each against `replicates` fresh simulations."""
    if datasets < 2:
        raise ValueError(f"the loss weight needs at least 2 synthetic data sets, got {datasets}")
    group = target.replicates + 1
    with torch.no_grad():
        output = target.simulate(theta.reshape(1, -1).expand(datasets * group, -1), seed)
    series = {name: output[name].reshape(datasets, group, *output[name].shape[1:]) for name in target.loss.observed}
    losses = []
    for k in range(datasets):
        synthetic = ObservationLoss(
            target.loss.kind,
            {name: values[k, 0] for name, values in series.items()},
            list(target.loss.observed),
            target.loss.holdout_days,
        )
        losses.append(synthetic({name: values[k, 1:].mean(0, keepdim=True) for name, values in series.items()}))
    return torch.cat(losses)


def loss_weight(losses: Tensor) -> tuple[float, float]:
    """(w, n_eff) = (E[ℓ] / Var[ℓ], 2 E[ℓ]² / Var[ℓ]) of bootstrap losses."""
    mean, variance = losses.mean().item(), losses.var().item()
    if not variance > 0:
        raise ValueError(f"the bootstrap losses do not vary (variance {variance}); simulate more data sets")
    return mean / variance, 2 * mean**2 / variance


def estimate_loss_weight(
    cfg: DictConfig,
    population_path: str | Path | None,
    observed_path: str | Path,
    posterior_path: str | Path,
    datasets: int = 48,
) -> dict[str, float | int | str]:
    """w, n_eff and the bootstrap loss moments at the posterior mean (unconstrained scale) of a calibration run."""
    target, _, _ = load_target(cfg, population_path, observed_path)
    posterior = read_posterior(posterior_path)
    draws = target.unconstrained({name: torch.as_tensor(posterior[name].values) for name in target.names})
    losses = bootstrap_losses(target, draws.mean(0), datasets, seed=int(cfg.seed))
    weight, effective = loss_weight(losses)
    return {
        "loss_weight": weight,
        "effective_cells": effective,
        "loss_mean": losses.mean().item(),
        "loss_variance": losses.var().item(),
        "datasets": datasets,
        "at": str(posterior_path),
    }


def write_loss_weight(
    cfg: DictConfig,
    population_path: str | Path | None,
    observed_path: str | Path,
    posterior_path: str | Path,
    output_path: str | Path,
    datasets: int = 48,
) -> Path:
    """Stage `loss_weight`: the estimate as JSON, with provenance, for a flow with `loss_weight: auto`."""
    estimate = estimate_loss_weight(cfg, population_path, observed_path, posterior_path, datasets)
    log.info(
        "loss weight w = %.4g (n_eff %.1f) from %d synthetic data sets",
        estimate["loss_weight"],
        estimate["effective_cells"],
        datasets,
    )
    return atomic_write_text(output_path, json.dumps({**estimate, **provenance(cfg, int(cfg.seed))}, indent=2))


def read_loss_weight(path: str | Path) -> float:
    """w from a file written by `write_loss_weight`, checked to be positive and finite."""
    try:
        weight = json.loads(Path(path).read_text()).get("loss_weight")
    except (OSError, ValueError, AttributeError) as err:
        raise ValueError(f"{path}: not a loss-weight file ({type(err).__name__}: {err})") from err
    if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
        raise ValueError(f"{path}: loss_weight must be a positive number, got {weight!r}")
    return float(weight)


def loss_weight_cli(
    cfg: DictConfig,
    population_path: str | Path | None,
    observed_path: str | Path,
    posterior_path: str | Path,
    output_path: str | Path | None = None,
) -> None:
    """CLI `diffabm loss-weight`: write the estimate to `output_path`, or print it without one."""
    if output_path:
        write_loss_weight(cfg, population_path, observed_path, posterior_path, output_path)
    else:
        print_loss_weight(cfg, population_path, observed_path, posterior_path)


def print_loss_weight(
    cfg: DictConfig,
    population_path: str | Path | None,
    observed_path: str | Path,
    posterior_path: str | Path,
    datasets: int = 48,
) -> dict[str, float | int | str]:
    """Print (and return) the estimate of `estimate_loss_weight`."""
    estimate = estimate_loss_weight(cfg, population_path, observed_path, posterior_path, datasets)
    print(
        f"calibration.flow.loss_weight ≈ {estimate['loss_weight']:.3g} (n_eff = {estimate['effective_cells']:.0f} "
        f"effective cells, {datasets} synthetic data sets at the posterior mean of {posterior_path})"
    )
    return estimate
