"""Losses between simulated and observed daily series, one value per parameter draw.

- `log_mse`: squared error of log counts, Σ_t (log1p ŷ_t − log1p y_t)² (GradABM-JUNE, Quera-Bofarull
  et al. 2023, §3.2, uses log10 of daily infections; log1p keeps zero counts finite).
- `mmd_squared` (`mmd`; `mmd_values` without the log1p): maximum mean discrepancy (Gretton et al. 2012, JMLR
13:723) between the set of
  a draw's log1p values over time and the observed ones, as in BlackBIRDS' `MMDLoss`
  (Quera-Bofarull et al. 2023, JOSS): Gaussian kernel, median-heuristic bandwidth from the
  observed series, unbiased (off-diagonal) within-sample terms.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

SeriesLoss = Callable[[Tensor, Tensor], Tensor]  # (B, T) simulated, (T,) observed -> (B,)


def log_mse(simulated: Tensor, observed: Tensor) -> Tensor:
    """Σ_t (log1p ŷ_bt − log1p y_t)² for (B, T[, A]) simulated and (T[, A]) observed series: (B,)."""
    return (torch.log1p(simulated) - torch.log1p(observed)).pow(2).flatten(1).sum(-1)


def median_bandwidth(points: Tensor) -> Tensor:
    """Median heuristic: the median of the pairwise distances between distinct points (T,)."""
    distances = (points[:, None] - points[None, :]).abs()
    off_diagonal = distances[~torch.eye(points.shape[0], dtype=torch.bool, device=points.device)]
    return off_diagonal.median().clamp_min(1e-3)


def gaussian_kernel(x: Tensor, y: Tensor, bandwidth: Tensor) -> Tensor:
    """k(x, y) = exp(−(x − y)² / (2 h²)) between the last axes of x (..., n) and y (..., m)."""
    return torch.exp(-(x[..., :, None] - y[..., None, :]).pow(2) / (2 * bandwidth**2))


def mmd_squared(simulated: Tensor, observed: Tensor) -> Tensor:
    """Unbiased MMD² between each draw's log1p values (B, T) and the observed ones (T,): (B,)."""
    return mmd_squared_values(torch.log1p(simulated), torch.log1p(observed))


def mmd_squared_values(x: Tensor, y: Tensor) -> Tensor:
    """Unbiased MMD² between each draw's values x (B, T) and the observed values y (T,) as they are: (B,)
    (for series that can be negative, e.g. the Brock & Hommes price deviations)."""
    if y.dim() != 1:
        raise ValueError(f"calibration.loss mmd compares series (T,), got observed shape {tuple(y.shape)}")
    bandwidth = median_bandwidth(y)
    n, m = x.shape[-1], y.shape[-1]
    kxx = gaussian_kernel(x, x, bandwidth)
    kyy = gaussian_kernel(y, y, bandwidth)
    kxy = gaussian_kernel(x, y, bandwidth)
    within_x = (kxx.sum((-2, -1)) - kxx.diagonal(dim1=-2, dim2=-1).sum(-1)) / (n * (n - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return within_x + within_y - 2 * kxy.mean((-2, -1))


SERIES_LOSSES: dict[str, SeriesLoss] = {"log_mse": log_mse, "mmd": mmd_squared, "mmd_values": mmd_squared_values}


class ObservationLoss:
    """Sum of a series loss over the observed series (e.g. cases, deaths) for B draws; the last `holdout_days` days
    are held out (not compared: a forecast is scored on them, `diffabm.calibration.forecast`)."""

    def __init__(self, kind: str, observed: Mapping[str, Tensor], observables: Sequence[str], holdout_days: int = 0):
        if kind not in SERIES_LOSSES:
            raise ValueError(f"calibration.loss: unknown kind {kind!r}; choose from {sorted(SERIES_LOSSES)}")
        missing = [name for name in observables if name not in observed]
        if missing:
            raise ValueError(f"calibration.observables {missing} are not in the observed data ({sorted(observed)})")
        self.kind = kind
        self.series_loss = SERIES_LOSSES[kind]
        self.observed = {name: torch.as_tensor(observed[name], dtype=torch.float32) for name in observables}
        days = {name: series.shape[0] for name, series in self.observed.items()}
        if holdout_days < 0 or any(holdout_days >= count for count in days.values()):
            raise ValueError(
                f"calibration.holdout_days is {holdout_days}, expected 0 <= days < the observed days "
                f"({min(days.values())})"
            )
        self.holdout_days = holdout_days
        self.observed = {name: series[: series.shape[0] - holdout_days] for name, series in self.observed.items()}

    def __call__(self, simulated: Mapping[str, Tensor]) -> Tensor:
        """The loss (B,) of simulated series, each (B, T)."""
        return sum(
            self.series_loss(simulated[name][:, : target.shape[0]], target.to(simulated[name].device))
            for name, target in self.observed.items()
        )
