"""Calib-NN calibration (dc-GradABM; Chopra et al. 2023, AAMAS, mode 2): small networks map
features of the data to the parameters and are trained end to end through the simulator.

- The static parameters θ = θ₀ + MLP(log1p observed series, standardised).
- With a `control` (a model control with dimension `time`; the epidemic's
  `transmission_multiplier`), a second MLP maps each week's features (the observed series of the
  week before and the week's position) to a log-value η_k of the control in week k, centred over
  the weeks: control(t) = exp(η_{week(t)} − mean η); for the epidemic β_L(t) = β_L · control(t),
  so β stays the time-averaged transmission.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from diffabm.calibration.module import CalibrationModule
from diffabm.calibration.target import CalibrationTarget

DAYS_PER_WEEK = 7


def observed_series(target: CalibrationTarget) -> Tensor:
    """log1p of the observed counts (values as they are for an observable that may be negative) as (days,
    columns), standardised over all values."""
    signed = target.model.signed_observables
    series = torch.cat([(values if name in signed else torch.log1p(values)).reshape(values.shape[0], -1)
                        for name, values in target.loss.observed.items()],
                       dim=1)
    return (series - series.mean()) / series.std().clamp_min(1e-6)


def observed_features(target: CalibrationTarget) -> Tensor:
    """The whole standardised observed series, flattened: (features,)."""
    return observed_series(target).flatten()


def weekly_features(target: CalibrationTarget) -> Tensor:
    """Per week k: the observed series of week k − 1 (zeros for week 0) and k / (weeks − 1): (weeks, features)."""
    series = observed_series(target)
    days, columns = series.shape
    weeks = math.ceil(days / DAYS_PER_WEEK)
    lagged = torch.cat([series.new_zeros(DAYS_PER_WEEK, columns), series])[: weeks * DAYS_PER_WEEK]
    position = torch.arange(weeks, dtype=series.dtype) / max(weeks - 1, 1)
    return torch.cat([lagged.reshape(weeks, DAYS_PER_WEEK * columns), position[:, None]], dim=1)


def multilayer_perceptron(features: int, hidden_features: Sequence[int], outputs: int) -> nn.Sequential:
    """SiLU MLP whose last layer starts at zero, so that its output starts at zero."""
    widths = [features, *hidden_features]
    layers: list[nn.Module] = []
    for width_in, width_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(width_in, width_out), nn.SiLU()]
    output = nn.Linear(widths[-1], outputs)
    nn.init.zeros_(output.weight)
    nn.init.zeros_(output.bias)
    return nn.Sequential(*layers, output)


class CalibNNCalibration(CalibrationModule):
    """θ = θ₀ + MLP(features), and with a `control` its value per week; training starts from θ₀."""

    def __init__(self, target: CalibrationTarget, initial: Tensor, seed: int, draws_per_step: int,
                 steps_per_epoch: int, lr: float, weight_decay: float = 0.0, lr_schedule: str = "constant",
                 hidden_features: Sequence[int] = (32, 32), control: str | None = None):
        super().__init__(target, seed, draws_per_step, steps_per_epoch, lr, weight_decay, lr_schedule)
        self.register_buffer("features", observed_features(target))
        self.register_buffer("initial", initial.detach().clone().reshape(target.dimension))
        self.network = multilayer_perceptron(self.features.shape[0], hidden_features, target.dimension)
        self.weekly_network = None
        self.control = control
        if control is not None:
            if target.model.controls.get(control) != ("time",):
                raise ValueError(f"calibration.calibnn.control: {control!r} is not a daily control of the model "
                                 f"(its controls: {dict(target.model.controls)})")
            self.register_buffer("week_features", weekly_features(target))
            self.weekly_network = multilayer_perceptron(self.week_features.shape[1], hidden_features, 1)

    def theta(self) -> Tensor:
        """The network's parameters θ (d,) for the observed features."""
        return self.initial + self.network(self.features)

    def controls(self, n: int) -> dict[str, Tensor] | None:
        """{control: exp(η_week − mean η) on each day (n, days)}, or None without a control."""
        if self.weekly_network is None:
            return None
        log_multiplier = self.weekly_network(self.week_features).squeeze(-1)
        daily = torch.exp(log_multiplier - log_multiplier.mean()).repeat_interleave(DAYS_PER_WEEK)
        days = len(self.target.model.coords()["time"])
        return {self.control: daily[:days].expand(n, -1)}

    def objective(self) -> tuple[Tensor, dict[str, Tensor]]:
        draws = self.draws_per_step
        loss = self.losses(self.theta().expand(draws, -1), self.controls(draws)).mean()
        return loss, {"loss": loss}

    def posterior_draws(self, n: int, seed: int) -> Tensor:
        with torch.no_grad():
            return self.theta().expand(n, -1).clone()
