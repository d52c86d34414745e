"""Stage `forecast_scores`: the calibrated model scored as a forecaster of its observed series, week by week.

On weekly totals of each observed series (complete weeks ending on the last day, so that the held-out days are
whole weeks; a series by group, e.g. by district, is scored per group and summed over groups): whether the
observation falls inside the
posterior predictive's 50% and 90% central intervals, and the weighted interval score (WIS; Bracher et al. 2021,
"Evaluating epidemic forecasts in an interval format", PLOS Comput Biol 17:e1008618) over the central intervals
of levels 10%, 20%, ..., 90%, 95%, 98% and the median. Weeks in the last `calibration.holdout_days` (left out of
the loss) are scored beside a baseline forecast: a random walk on the log of the weekly counts from the last
fitted week, its spread the standard deviation of the fitted weeks' log ratios (scaled by √weeks ahead).
"""

from __future__ import annotations

import logging
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd

from diffabm.store import atomic_write_text, read_dataset

log = logging.getLogger(__name__)

ALPHAS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # central intervals of level 1 − α


def weighted_interval_score(observed: float, quantile: callable) -> float:
    """WIS of one observation under a forecast given by its quantile function (p -> value)."""
    total = 0.5 * abs(observed - quantile(0.5))
    for alpha in ALPHAS:
        lower, upper = quantile(alpha / 2), quantile(1 - alpha / 2)
        score = (upper - lower) + 2 / alpha * (max(lower - observed, 0) + max(observed - upper, 0))
        total += alpha / 2 * score
    return total / (len(ALPHAS) + 0.5)


def weekly(series: np.ndarray) -> np.ndarray:
    """Sums over the complete weeks of the last axis that end on its last day."""
    weeks = series.shape[-1] // 7
    return series[..., series.shape[-1] - weeks * 7 :].reshape(*series.shape[:-1], weeks, 7).sum(-1)


def _scored_series(fit, name: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(group, samples (draw, time), observed (time,)) of one observable: the series itself, or for a series by
    group each group's and their sum ("all")."""
    values, observed = fit[name], fit[f"observed_{name}"]
    if values.dims == ("draw", "time"):
        return [("all", values.values, observed.values)]
    if values.dims[:2] != ("draw", "time") or values.ndim != 3:
        return []
    group = values.dims[2]
    return [("all", values.values.sum(-1), observed.values.sum(-1))] + [
        (str(label), values.values[..., k], observed.values[..., k]) for k, label in enumerate(fit[group].values)
    ]


def forecast_scores(fit_path: str | Path, holdout_days: int) -> pd.DataFrame:
    """One row per observed series and week: observed and predicted (median, 5%, 95%) totals, 50% and 90% interval
    coverage, the model's WIS, and for held-out weeks the baseline's median and WIS."""
    fit = read_dataset(fit_path)
    rows = []
    days = fit.sizes["time"]
    weeks = days // 7
    weeks_fitted = weeks - -(-holdout_days // 7)  # a week with any held-out day is held out
    first_day = days - weeks * 7
    for name in fit.attrs["observables"]:
        for group, sample_series, observed_series in _scored_series(fit, name):
            rows += _weekly_rows(
                name,
                group,
                weekly(sample_series),
                weekly(observed_series),
                weeks_fitted,
                [str(fit.time.values[first_day + 7 * week])[:10] for week in range(weeks)],
            )
    return pd.DataFrame(rows)


def _weekly_rows(
    name: str, group: str, samples: np.ndarray, observed: np.ndarray, weeks_fitted: int, week_starts: list[str]
) -> list[dict]:
    """The score rows of one weekly series: samples (draw, weeks), observed (weeks,)."""
    rows = []
    growth = np.diff(np.log1p(observed[:weeks_fitted]))
    spread = float(growth.std(ddof=1)) if growth.size > 1 else 1.0
    last = observed[weeks_fitted - 1]
    for week in range(observed.shape[0]):
        y, draws = float(observed[week]), samples[:, week]
        quantiles = lambda p, draws=draws: float(np.quantile(draws, p))  # noqa: E731
        held_out = week >= weeks_fitted
        row = {
            "observable": name,
            "group": group,
            "week_start": week_starts[week],
            "period": "holdout" if held_out else "fit",
            "observed": y,
            "median": quantiles(0.5),
            "q05": quantiles(0.05),
            "q95": quantiles(0.95),
            "inside_50": quantiles(0.25) <= y <= quantiles(0.75),
            "inside_90": quantiles(0.05) <= y <= quantiles(0.95),
            "wis": weighted_interval_score(y, quantiles),
        }
        if held_out:
            ahead = week - weeks_fitted + 1

            def baseline(p: float, ahead: int = ahead) -> float:
                return float(np.expm1(np.log1p(last) + np.sqrt(ahead) * spread * NormalDist().inv_cdf(p)))

            row.update(
                baseline_median=baseline(0.5),
                baseline_wis=weighted_interval_score(y, baseline),
                baseline_inside_90=baseline(0.05) <= y <= baseline(0.95),
            )
        rows.append(row)
    return rows


def write_forecast_scores(cfg, fit_path: str | Path, output_path: str | Path) -> Path:
    """Stage `forecast_scores`: the weekly scores of one calibration run's posterior predictive as CSV."""
    table = forecast_scores(fit_path, int(cfg.calibration.get("holdout_days", 0)))
    for period, part in table[table.group == "all"].groupby("period"):
        message = (
            f"{period}: {len(part)} weeks, 90% coverage {part.inside_90.mean():.2f}, mean WIS {part.wis.mean():.1f}"
        )
        if period == "holdout":
            message += f" (baseline {part.baseline_wis.mean():.1f}, coverage {part.baseline_inside_90.mean():.2f})"
        log.info(message)
    return atomic_write_text(output_path, table.to_csv(index=False, float_format="%.6g"))
