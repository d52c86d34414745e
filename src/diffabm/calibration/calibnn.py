"""Calib-NN calibration (dc-GradABM; Chopra et al. 2023, AAMAS, mode 2): a small network maps
features of the data — the log1p observed series, standardised — to the unconstrained
parameters and is trained end to end through the simulator.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from diffabm.calibration.module import CalibrationModule
from diffabm.calibration.target import CalibrationTarget


def observed_features(target: CalibrationTarget) -> Tensor:
    """log1p of the observed series, concatenated and standardised: (features,)."""
    series = torch.cat([torch.log1p(values) for values in target.loss.observed.values()])
    return (series - series.mean()) / series.std().clamp_min(1e-6)


class CalibNNCalibration(CalibrationModule):
    """θ = θ₀ + MLP(features); the MLP's last layer starts at zero, so training starts from θ₀."""

    def __init__(self, target: CalibrationTarget, initial: Tensor, seed: int, draws_per_step: int,
                 steps_per_epoch: int, lr: float, weight_decay: float = 0.0,
                 hidden_features: Sequence[int] = (32, 32)):
        super().__init__(target, seed, draws_per_step, steps_per_epoch, lr, weight_decay)
        features = observed_features(target)
        self.register_buffer("features", features)
        self.register_buffer("initial", initial.detach().clone().reshape(target.dimension))
        widths = [features.shape[0], *hidden_features]
        layers: list[nn.Module] = []
        for width_in, width_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(width_in, width_out), nn.SiLU()]
        output = nn.Linear(widths[-1], target.dimension)
        nn.init.zeros_(output.weight)
        nn.init.zeros_(output.bias)
        self.network = nn.Sequential(*layers, output)

    def theta(self) -> Tensor:
        """The network's parameters θ (d,) for the observed features."""
        return self.initial + self.network(self.features)

    def objective(self) -> tuple[Tensor, dict[str, Tensor]]:
        loss = self.losses(self.theta().expand(self.draws_per_step, -1)).mean()
        return loss, {"loss": loss}

    def posterior_draws(self, n: int, seed: int) -> Tensor:
        with torch.no_grad():
            return self.theta().expand(n, -1).clone()
