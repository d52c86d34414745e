"""Simulated trajectories of any model: one panel per observable over time (dates for the epidemic, steps for
Brock & Hommes), the median and 90% band (5–95%) over draws for a series (draw, time), and the median per category
for (draw, time, category) (e.g. stage, age group); the study's interventions shaded."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from diffabm.figures.style import (
    config_of,
    format_time_axis,
    intervention_legend,
    intervention_spans,
    plot_band,
    provenance_of,
    save_figure,
    shade_interventions,
    title_of,
    unit_label,
)
from diffabm.store import read_dataset

MAX_COLUMNS = 4
ORDER = ("new_infections", "cases", "reported_cases", "hospitalisations", "deaths", "stage_counts")


def panel_order(names: list[str]) -> list[str]:
    """Totals first, in the order of the disease's course, each followed by its series by setting and by group;
    other names after them, as they come."""

    def key(item: tuple[int, str]):
        position, name = item
        event, _, grouping = name.partition("_by_")
        event = "new_infections" if event == "infections" else event
        return (ORDER.index(event), bool(grouping), grouping) if event in ORDER else (len(ORDER), position, "")

    return [name for _, name in sorted(enumerate(names), key=key)]


def plot_simulation(simulation_path: str | Path, output_path: str | Path) -> Path:
    """Plot every observable of `simulation.zarr` that has a `time` dimension; PNG (provenance in its metadata) and
    PDF."""
    ds = read_dataset(simulation_path)
    names = panel_order(
        [
            name
            for name in ds.data_vars
            if ds[name].dims[:2] == ("draw", "time")
            and ds[name].ndim <= 3
            and not (ds[name].ndim == 3 and ds.sizes[ds[name].dims[2]] == 1)
        ]
    )  # one group: the total
    if not names:
        raise ValueError(f"store {simulation_path}: no series with dimensions (draw, time) to plot")
    columns = min(MAX_COLUMNS, len(names))
    rows = math.ceil(len(names) / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(max(4.4 * columns, 7.5), 3.6 * rows + 0.6), layout="constrained", squeeze=False
    )
    config = config_of(ds)
    spans = intervention_spans(config)
    time = ds.time.values
    draws = ds.sizes["draw"]
    for axis, name in zip(axes.flat, names):
        series = ds[name]
        if series.ndim == 2:
            if draws > 1:
                plot_band(axis, time, series, label=f"median of {draws} draws")
            else:
                axis.plot(time, series.values[0], label="one draw")
        else:
            category = series.dims[2]
            median = series.median("draw")
            for label in ds[category].values:
                axis.plot(time, median.sel({category: label}), lw=1.2, label=title_of(str(label)))
            positive = median.values[median.values > 0]
            if positive.size and np.nanmax(median.values) > 100 * max(np.nanmin(positive), 1.0):
                axis.set_yscale("symlog", linthresh=1.0)
            axis.legend(
                fontsize="x-small",
                title=f"{title_of(category)} (median of {draws} draw{'s' * (draws > 1)})",
                title_fontsize="x-small",
                ncols=2 if ds.sizes[category] > 5 else 1,
            )
        shade_interventions(axis, spans)
        axis.set(title=title_of(name), ylabel=unit_label(name))
        format_time_axis(axis, time)
        if series.ndim == 2:
            axis.legend(fontsize="x-small")
    for axis in axes.flat[len(names) :]:
        axis.set_visible(False)
    intervention_legend(fig, spans)
    study = config.get("study", "")
    fig.suptitle(
        f"{study + ': ' if study else ''}simulated trajectories, {draws} draw{'s' * (draws > 1)} "
        f"(seed {ds.attrs.get('seed', '')})"
    )
    return save_figure(fig, output_path, provenance_of(ds, Source=str(simulation_path)), dpi=110)
