"""Calibration figure of one run: on top the loss by epoch, each observable's posterior predictive (median and 90%
band over the fit's draws) beside the observed data, with the study's interventions shaded and the held-out days
marked, and a calibrated control (Calib-NN's transmission multiplier); below, the posterior: a corner plot (90%
intervals, prior and truth) when it is a sample, or, for a point estimate (modes `point`, `calibnn`; an ensemble's
few members), each estimate against the prior's quantiles and the truth, with a table of the numbers.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
import torch
import xarray as xr
from omegaconf import DictConfig, OmegaConf

from diffabm.calibration.datasets import read_posterior
from diffabm.figures.style import (
    BAND,
    config_of,
    format_time_axis,
    intervention_legend,
    intervention_spans,
    plot_band,
    plot_observed,
    provenance_of,
    quantile_band,
    save_figure,
    shade_interventions,
    title_of,
    unit_label,
)
from diffabm.store import read_dataset

MAX_GROUP_PANELS = 4  # a grouped observable with at most this many groups gets a panel per group, else their sum
MIN_CORNER_DRAWS = 10  # fewer draws (a point estimate, an ensemble's members) are shown as markers, not a corner


def plot_calibration(
    cfg: DictConfig, posterior_path: str | Path, fit_path: str | Path, metrics_path: str | Path, output_path: str | Path
) -> Path:
    """One PNG (and a PDF beside it) of a calibration run: loss, posterior predictive vs observed, posterior."""
    posterior, fit = read_posterior(posterior_path), read_dataset(fit_path)  # (chain, draw) as one `draw`
    metrics = pd.read_csv(metrics_path)
    names = [name for name in cfg.calibration.prior if name in posterior]
    truth = posterior.attrs.get("truth", {})
    prior = {name: OmegaConf.to_container(cfg.calibration.prior[name]) for name in names}
    series = _predictive_series(fit)
    controls = [name for name in posterior.data_vars if posterior[name].dims[:2] == ("draw", "time")]
    corner = _is_sample(posterior, names)
    top_panels = 1 + len(series) + (1 if controls else 0)
    width = max(3.6 * len(names) if corner else 0.0, 4.4 * top_panels, 10.0)
    bottom_height = 2.6 * len(names) if corner else 0.55 * len(names) + 2.0
    fig = plt.figure(figsize=(width, 4.4 + bottom_height), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[4.4, bottom_height], hspace=0.03)
    columns = max(top_panels, 2)
    axes = top.subplots(1, columns, squeeze=False, width_ratios=[0.8] + [1.0] * (columns - 1))[0]
    _loss(axes[0], metrics, fit.attrs.get("loss", "loss"))
    spans = intervention_spans(config_of(fit))
    holdout = int(cfg.calibration.get("holdout_days", 0) or 0)
    for axis, (label, simulated, observed, unit) in zip(axes[1:], series):
        _predictive(axis, fit.time.values, simulated, observed, label, unit, spans, holdout)
    if controls:
        _control(axes[len(series) + 1], posterior, controls[0], spans)
    for axis in axes[top_panels:]:
        axis.set_visible(False)
    if corner:
        _corner(bottom, posterior, names, prior, truth)
    else:
        _point_estimates(bottom, posterior, names, prior, truth)
    intervention_legend(fig, spans)
    kind = posterior.attrs.get("kind", f"{posterior.sizes['draw']} posterior draw{'s' * (posterior.sizes['draw'] > 1)}")
    fig.suptitle(
        f"{cfg.study}: {posterior.attrs.get('mode', '')} calibration ({kind}); seed {posterior.attrs.get('seed', '')}"
    )
    return save_figure(fig, output_path, provenance_of(posterior, Source=str(posterior_path)), dpi=110)


def _predictive_series(fit: xr.Dataset) -> list[tuple[str, xr.DataArray, xr.DataArray, str]]:
    """(title, simulated (draw, time), observed (time,), unit label) per panel: each observable, summed over any
    other dimension, or one panel per group of a grouped observable with few groups."""
    panels = []
    for name in fit.attrs["observables"]:
        simulated, observed = fit[name], fit[f"observed_{name}"]
        extra = [dim for dim in simulated.dims if dim not in ("draw", "time")]
        if len(extra) == 1 and 1 < simulated.sizes[extra[0]] <= MAX_GROUP_PANELS:
            for group in simulated[extra[0]].values:
                panels.append(
                    (
                        f"{title_of(name)}: {group}",
                        simulated.sel({extra[0]: group}),
                        observed.sel({extra[0]: group}),
                        unit_label(name),
                    )
                )
        else:
            label = title_of(name) + (f" (sum over {', '.join(extra)})" if extra else "")
            panels.append((label, simulated.sum(extra), observed.sum(extra), unit_label(name)))
    return panels


def _is_sample(posterior: xr.Dataset, names: list[str]) -> bool:
    """Whether the posterior is a sample worth a corner plot: enough draws, not all equal."""
    return posterior.sizes["draw"] >= MIN_CORNER_DRAWS and any(np.ptp(posterior[name].values) > 0 for name in names)


def _loss(axis, metrics: pd.DataFrame, loss_kind: str) -> None:
    """The loss (and the flow's objective, weighted loss + KL) per epoch; one line per ensemble member."""
    columns = [column for column in ("loss_epoch", "objective_epoch") if column in metrics]
    for column, style in zip(columns, ("-", "--")):
        rows = metrics.dropna(subset=[column])
        groups = rows.groupby("member") if "member" in rows else [(None, rows)]
        for k, (member, frame) in enumerate(groups):
            label = {"loss_epoch": f"loss ({loss_kind})", "objective_epoch": "objective (weighted loss + KL)"}[column]
            axis.plot(
                frame["epoch"],
                frame[column],
                style,
                color=f"C{k}",
                lw=1.2,
                marker="." if len(frame) < 30 else None,
                label=(f"member {member}: " if member is not None else "") + label if k < 4 else None,
            )
    values = np.concatenate([metrics[column].dropna().to_numpy() for column in columns] or [np.zeros(1)])
    if values.size and (values > 0).all() and values.max() > 20 * values.min():
        axis.set_yscale("log")
    axis.set(xlabel="epoch", ylabel=f"loss per epoch ({loss_kind})", title="training")
    axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axis.legend(fontsize="x-small")


def _predictive(axis, time, simulated, observed, label, unit, spans, holdout: int) -> None:
    """Posterior predictive median and 90% band, the observed data, the interventions and the held-out days."""
    draws = simulated.sizes["draw"]
    plot_band(axis, time, simulated, label=f"predictive median ({draws} draws)")
    plot_observed(axis, time, observed.values)
    low, _, high = quantile_band(simulated.transpose("draw", ...).values)
    seen = observed.values[np.isfinite(observed.values)]
    bottom, top = (float(seen.min()), float(seen.max())) if seen.size else (0.0, 1.0)
    span = top - bottom or 1.0
    if (
        np.nanmin(low) < bottom - 20 * span or np.nanmax(high) > top + 20 * span
    ):  # exploding draws: keep the data in view
        axis.set_ylim(bottom - span, top + span)
        label += " (y axis clipped)"
    if bottom >= 0 and np.nanmin(low) >= 0:
        axis.set_ylim(0, None)
    shade_interventions(axis, spans)
    if holdout > 0:
        axis.axvline(
            time[len(time) - holdout], color="black", ls="--", lw=0.8, label=f"held out: last {holdout} days (forecast)"
        )
    axis.set(title=label, ylabel=unit)
    format_time_axis(axis, time)
    axis.legend(fontsize="x-small", loc="upper left")


def _control(axis, posterior: xr.Dataset, name: str, spans) -> None:
    """A calibrated control over time (e.g. Calib-NN's weekly transmission multiplier), per group if grouped."""
    values = posterior[name].isel(draw=0)
    time = posterior.time.values
    if values.ndim == 1:
        axis.step(time, values.values, where="post", label=title_of(name))
    else:
        group = values.dims[1]
        for label in values[group].values:
            axis.step(time, values.sel({group: label}).values, where="post", label=str(label))
    axis.axhline(1.0, color="grey", lw=0.5)
    shade_interventions(axis, spans)
    axis.set(title=f"calibrated control: {title_of(name)}", ylabel="multiplier of transmission (×)")
    format_time_axis(axis, time)
    axis.legend(fontsize="x-small")


def _prior(spec: dict) -> torch.distributions.Distribution:
    spec = dict(spec)
    family = getattr(torch.distributions, spec.pop("distribution"))
    return family(**{key: torch.tensor(float(value)) for key, value in spec.items()}, validate_args=False)


def _prior_draws(spec: dict, count: int = 20_000) -> np.ndarray:
    """Sorted draws of a prior (a fixed seed: the same figure every time)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return np.sort(_prior(spec).sample((count,)).numpy().astype(float))


def _corner(subfig, posterior: xr.Dataset, names: list[str], prior: dict, truth: dict) -> None:
    """Marginals (histogram, prior density, 90% interval, truth) on the diagonal, pairs below it."""
    size = len(names)
    axes = subfig.subplots(size, size, squeeze=False)
    for row, y_name in enumerate(names):
        for column, x_name in enumerate(names):
            axis = axes[row, column]
            if column > row:
                axis.set_visible(False)
                continue
            x = posterior[x_name].values
            if row == column:
                axis.hist(x, bins=30, density=True, alpha=0.6, color="C0", label="posterior")
                ends = [x.min(), x.max(), *([truth[x_name]] if x_name in truth else [])]
                pad = 0.1 * (max(ends) - min(ends)) or 0.1 * abs(max(ends)) or 1e-3
                grid = np.linspace(min(ends) - pad, max(ends) + pad, 200)
                distribution = _prior(prior[x_name])
                grid = grid[distribution.support.check(torch.as_tensor(grid)).numpy()]
                density = distribution.log_prob(torch.as_tensor(grid)).exp().numpy()
                axis.plot(grid, density, color="C1", label="prior")
                for edge in np.quantile(x, BAND):
                    axis.axvline(edge, color="C0", ls="--", lw=0.8)
                axis.plot([], [], color="C0", ls="--", lw=0.8, label="90% interval")
                axis.set_yticks([])
                if row == 0:
                    axis.set_ylabel("density")
            else:
                axis.plot(x, posterior[y_name].values, ".", ms=2, alpha=0.5, color="C0")
                if y_name in truth:
                    axis.axhline(truth[y_name], color="C3", lw=1)
                if column == 0:
                    axis.set_ylabel(y_name)
                else:
                    axis.tick_params(labelleft=False)
            if x_name in truth:
                axis.axvline(truth[x_name], color="C3", lw=1, label="truth")
            if row == size - 1:
                axis.set_xlabel(x_name)
            if row == column == 0:
                axis.legend(fontsize="x-small")
    subfig.suptitle(f"posterior: {posterior.sizes['draw']} draws", fontsize="medium")


def _point_estimates(subfig, posterior: xr.Dataset, names: list[str], prior: dict, truth: dict) -> None:
    """A point estimate (or an ensemble's members): each parameter's estimate and truth as quantiles of its prior
    (markers on a common 0–1 scale, the prior's 90% interval shaded), and the numbers in a table."""
    marker_axis, table_axis = subfig.subplots(1, 2, width_ratios=[1.0, 1.3])
    draws = posterior.sizes["draw"]
    rows = []
    for k, name in enumerate(names):
        reference = _prior_draws(prior[name])
        estimates = posterior[name].values.astype(float)
        y = len(names) - 1 - k
        marker_axis.plot(
            [BAND[0], BAND[1]],
            [y, y],
            color="C1",
            lw=6,
            alpha=0.35,
            solid_capstyle="butt",
            label="prior 90% interval" if k == 0 else None,
        )
        marker_axis.plot(
            np.searchsorted(reference, estimates) / reference.size,
            np.full(draws, y),
            "o",
            color="C0",
            ms=6,
            label=("estimate" if draws == 1 else f"estimates ({draws} members)") if k == 0 else None,
        )
        if name in truth:
            marker_axis.plot(
                np.searchsorted(reference, truth[name]) / reference.size,
                y,
                "x",
                color="C3",
                ms=9,
                mew=2,
                label="truth" if k == 0 else None,
            )
        low, high = np.quantile(reference, BAND)
        estimate = (
            f"{estimates[0]:.4g}"
            if draws == 1
            else f"{np.median(estimates):.4g} [{estimates.min():.3g}, {estimates.max():.3g}]"
        )
        rows.append([name, estimate, f"{truth[name]:.4g}" if name in truth else "–", f"{low:.3g} – {high:.3g}"])
    marker_axis.set(
        yticks=range(len(names)),
        yticklabels=names[::-1],
        xlim=(0, 1),
        ylim=(-0.6, len(names) - 0.4),
        xlabel="quantile of the prior (0 – 1)",
        title="estimate and truth within the prior",
    )
    subfig.legend(
        *marker_axis.get_legend_handles_labels(), fontsize="x-small", loc="outside lower left", ncols=3, frameon=False
    )
    table_axis.axis("off")
    estimate_header = "estimate" if draws == 1 else "median [min, max]"
    table = table_axis.table(
        cellText=rows,
        colLabels=["parameter", estimate_header, "truth", "prior 90% interval"],
        loc="center",
        cellLoc="center",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.scale(1.0, 1.5)
    subfig.suptitle(
        f"point estimate ({draws} draw{'s' * (draws > 1)}): no posterior sample to show as a corner plot",
        fontsize="medium",
    )
