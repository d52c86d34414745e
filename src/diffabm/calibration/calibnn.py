"""Calib-NN calibration (dc-GradABM; Chopra et al. 2023, AAMAS, mode 2): small networks map
features of the data to the parameters and are trained end to end through the simulator.

- The static parameters θ = θ₀ + MLP(log1p observed series, standardised).
- With a `control` (a model control with dimension `time`; the epidemic's
  `transmission_multiplier`), a second MLP maps each week's features (the observed series of the
  week before and the week's position) to a log-value η_k of the control in week k, centred over
  the weeks: control(t) = exp(η_{week(t)} − mean η); for the epidemic β_L(t) = β_L · control(t),
  so β stays the time-averaged transmission.
- With a control per group (dimensions (`time`, group), e.g. the epidemic's `transmission_by_district`), the
  network reads, per group r and week k, exogenous features (`Simulator.exogenous_features`: for the epidemic
  the interventions' contact multipliers, i.e. the alert level, and the expected vaccine coverage), the
  observed series of that group in week k − 1 (lagged cases; in held-out weeks the last fitted week's, so a
  forecast never reads held-out data) and the group's one-hot code, and emits η_{r,k}: one network for all
  groups, trained jointly on their series (dc-GradABM, Chopra et al. 2023, §4: per-region features → that
  region's weekly transmission). control(t, r) = exp(η_{r,week(t)} − mean η).
"""

from __future__ import annotations

import itertools
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
    series = torch.cat(
        [
            (values if name in signed else torch.log1p(values)).reshape(values.shape[0], -1)
            for name, values in target.loss.observed.items()
        ],
        dim=1,
    )
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


def _weekly_means(series: Tensor, weeks: int) -> Tensor:
    """Means (weeks, ...) of a daily series (days, ...) over whole weeks; a short last week averages its days."""
    days = series.shape[0]
    padded = torch.cat([series, series[-1:].expand(weeks * DAYS_PER_WEEK - days, *series.shape[1:])])
    return padded.reshape(weeks, DAYS_PER_WEEK, *series.shape[1:]).mean(1)


def group_week_features(target: CalibrationTarget, control: str) -> Tensor:
    """Per week and group of the control's second dimension (weeks, groups, features), standardised per feature:
    the model's exogenous features of the week, the week-before log1p observed series of the group (observed
    series with dimensions (time, group)), and the group's one-hot code."""
    model = target.model
    dimension = model.controls[control][1]
    exogenous = model.exogenous_features(dimension).float()
    days, groups = exogenous.shape[:2]
    weeks = math.ceil(days / DAYS_PER_WEEK)
    parts = [_weekly_means(exogenous, weeks)]
    for name, values in target.loss.observed.items():
        if tuple(model.observables[name]) != ("time", dimension):
            continue
        fitted = _weekly_means(torch.log1p(values.float()), math.ceil(values.shape[0] / DAYS_PER_WEEK))
        if values.shape[0] % DAYS_PER_WEEK:  # a partial last week: not a whole week of data
            fitted = fitted[:-1]
        lagged = torch.cat([fitted.new_zeros(1, groups), fitted])[:weeks]
        lagged = torch.cat([lagged, lagged[-1:].expand(weeks - lagged.shape[0], -1)])  # held out: persistence
        parts.append(lagged[..., None])
    features = torch.cat(parts, dim=-1)
    mean, sd = features.mean((0, 1)), features.std((0, 1))
    features = torch.where(sd > 1e-6, (features - mean) / sd.clamp_min(1e-6), torch.zeros_like(features))
    one_hot = torch.eye(groups).expand(weeks, -1, -1)
    return torch.cat([features, one_hot], dim=-1)


def multilayer_perceptron(features: int, hidden_features: Sequence[int], outputs: int) -> nn.Sequential:
    """SiLU MLP whose last layer starts at zero, so that its output starts at zero."""
    widths = [features, *hidden_features]
    layers: list[nn.Module] = []
    for width_in, width_out in itertools.pairwise(widths):
        layers += [nn.Linear(width_in, width_out), nn.SiLU()]
    output = nn.Linear(widths[-1], outputs)
    nn.init.zeros_(output.weight)
    nn.init.zeros_(output.bias)
    return nn.Sequential(*layers, output)


class CalibNNCalibration(CalibrationModule):
    """θ = θ₀ + MLP(features), and with a `control` its value per week; training starts from θ₀."""

    def __init__(
        self,
        target: CalibrationTarget,
        initial: Tensor,
        seed: int,
        draws_per_step: int,
        steps_per_epoch: int,
        lr: float,
        weight_decay: float = 0.0,
        lr_schedule: str = "constant",
        hidden_features: Sequence[int] = (32, 32),
        control: str | None = None,
    ):
        super().__init__(target, seed, draws_per_step, steps_per_epoch, lr, weight_decay, lr_schedule)
        self.register_buffer("features", observed_features(target))
        self.register_buffer("initial", initial.detach().clone().reshape(target.dimension))
        self.network = multilayer_perceptron(self.features.shape[0], hidden_features, target.dimension)
        self.weekly_network = None
        self.control = control
        if control is not None:
            dims = tuple(target.model.controls.get(control, ()))
            if not dims or dims[0] != "time" or len(dims) > 2:
                raise ValueError(
                    f"calibration.calibnn.control: {control!r} is not a daily control of the model, "
                    f"overall or per group (its controls: {dict(target.model.controls)})"
                )
            features = weekly_features(target) if len(dims) == 1 else group_week_features(target, control)
            self.register_buffer("week_features", features)
            self.weekly_network = multilayer_perceptron(self.week_features.shape[-1], hidden_features, 1)

    def theta(self) -> Tensor:
        """The network's parameters θ (d,) for the observed features."""
        return self.initial + self.network(self.features)

    def controls(self, n: int) -> dict[str, Tensor] | None:
        """{control: exp(η_week − mean η) on each day (n, days[, groups])}, or None without a control."""
        if self.weekly_network is None:
            return None
        log_multiplier = self.weekly_network(self.week_features).squeeze(-1)  # (weeks[, groups])
        daily = torch.exp(log_multiplier - log_multiplier.mean()).repeat_interleave(DAYS_PER_WEEK, dim=0)
        daily = daily[: len(self.target.model.coords()["time"])]
        return {self.control: daily.expand(n, *daily.shape)}

    def objective(self) -> tuple[Tensor, dict[str, Tensor]]:
        draws = self.draws_per_step
        loss = self.losses(self.theta().expand(draws, -1), self.controls(draws)).mean()
        return loss, {"loss": loss}

    def posterior_draws(self, n: int, seed: int) -> Tensor:
        with torch.no_grad():
            return self.theta().expand(n, -1).clone()
