"""The GVI loss weight w from the sampling distribution of the loss (Satterthwaite 1946, Biometrics 2:110).

Simulate data sets at a fitted θ̂, take each one's loss against the mean of `replicates` fresh
simulations, and treat the loss as a scaled χ² with n_eff degrees of freedom: matching mean and
variance gives n_eff = 2 E[ℓ]² / Var[ℓ] and w = E[ℓ] / Var[ℓ], so that w · ℓ ≈ ½ χ²_{n_eff},
a negative log-likelihood. The days of an epidemic are strongly correlated, so n_eff is far below
the number of observed cells and w far below the 1 / (2σ²) of independent cells.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import Tensor

from diffabm.calibration.losses import ObservationLoss
from diffabm.calibration.observe import OBSERVED_SERIES
from diffabm.calibration.target import CalibrationTarget


def bootstrap_losses(target: CalibrationTarget, theta: Tensor, datasets: int, seed: int) -> Tensor:
    """Losses (datasets,) of data sets simulated at θ (d,), each against `replicates` fresh simulations."""
    if datasets < 2:
        raise ValueError(f"the loss weight needs at least 2 synthetic data sets, got {datasets}")
    group = target.replicates + 1
    with torch.no_grad():
        output = target.simulate(theta.reshape(1, -1).expand(datasets * group, -1), seed)
    series = {name: getattr(output, name).reshape(datasets, group, *getattr(output, name).shape[1:])
              for name in OBSERVED_SERIES}
    losses = []
    for k in range(datasets):
        synthetic = ObservationLoss(target.loss.kind, {name: values[k, 0] for name, values in series.items()},
                                    list(target.loss.observed))
        losses.append(synthetic({name: values[k, 1:].mean(0, keepdim=True) for name, values in series.items()}))
    return torch.cat(losses)


def loss_weight(losses: Tensor) -> tuple[float, float]:
    """(w, n_eff) = (E[ℓ] / Var[ℓ], 2 E[ℓ]² / Var[ℓ]) of bootstrap losses."""
    mean, variance = losses.mean().item(), losses.var().item()
    if not variance > 0:
        raise ValueError(f"the bootstrap losses do not vary (variance {variance}); simulate more data sets")
    return mean / variance, 2 * mean**2 / variance


def print_loss_weight(cfg: DictConfig, population_path: str | Path, observed_path: str | Path,
                      posterior_path: str | Path, datasets: int = 48) -> tuple[float, float]:
    """Print (and return) w and n_eff at the posterior mean (unconstrained scale) of a calibration run."""
    from diffabm.calibration.stage import build_target
    from diffabm.store import read_dataset

    target, _ = build_target(cfg, population_path, read_dataset(observed_path))
    posterior = read_dataset(posterior_path)
    draws = target.unconstrained({name: torch.as_tensor(posterior[name].values) for name in target.names})
    weight, effective = loss_weight(bootstrap_losses(target, draws.mean(0), datasets, seed=int(cfg.seed)))
    print(f"calibration.flow.loss_weight ≈ {weight:.3g} (n_eff = {effective:.0f} effective cells, "
          f"{datasets} synthetic data sets at the posterior mean of {posterior_path})")
    return weight, effective
