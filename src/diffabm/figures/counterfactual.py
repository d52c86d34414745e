"""Figure of stage `counterfactual` (`diffabm.counterfactual`): per scenario, the median and 90% band (5–95%) over
the posterior draws of daily infections, reported cases (beside the observed ones) and deaths, the study's
interventions (the baseline's) shaded; and each scenario's total infections minus the baseline's in the same draws
(median and 90% interval)."""

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
    plot_observed,
    provenance_of,
    quantile_band,
    save_figure,
    shade_interventions,
    title_of,
    unit_label,
)
from diffabm.store import read_dataset

PANELS = ("new_infections", "reported_cases", "deaths")
MAX_BANDS = 3  # scenarios whose 90% bands are all shaded; with more, only the baseline's


def plot_counterfactuals(
    store_path: str | Path, output_path: str | Path, observed_path: str | Path | None = None
) -> Path:
    ds = read_dataset(store_path)
    observed = read_dataset(observed_path) if observed_path is not None else None
    panels = [name for name in PANELS if name in ds]
    rows = math.ceil((len(panels) + 1) / 2)
    fig, grid = plt.subplots(rows, 2, figsize=(13.0, 4.4 * rows + 0.8), layout="constrained", squeeze=False)
    axes = list(grid.flat)
    for ax in axes[len(panels) + 1 :]:
        ax.set_visible(False)
    axes = axes[: len(panels) + 1]
    scenarios = [str(scenario) for scenario in ds.scenario.values]
    baseline = ds.attrs.get("baseline")
    banded = [s for s in scenarios if len(scenarios) <= MAX_BANDS or s == baseline]  # more bands would be mud
    colours = {scenario: plt.cm.tab10(k % 10) for k, scenario in enumerate(scenarios)}
    spans = intervention_spans(config_of(ds))
    time = ds.time.values
    for ax, name in zip(axes, panels):
        for scenario in scenarios:
            plot_band(
                ax,
                time,
                ds[name].sel(scenario=scenario),
                color=colours[scenario],
                lw=2.0 if scenario == baseline else 1.0,
                label=title_of(scenario),
                band_label=None,
                alpha=0.15 if scenario in banded else 0.0,
            )
        if observed is not None and name in observed:
            (dots,) = plot_observed(ax, observed.time.values, observed[name].values)
            ax.legend(handles=[dots], fontsize=8, loc="upper left")
        shade_interventions(ax, spans)
        ax.set_ylabel(unit_label(name))
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_ylim(bottom=0)
        format_time_axis(ax, time)
        ax.set_title(f"{title_of(name)}: median, 90% band", fontsize=10)
    which = "each scenario's" if len(banded) == len(scenarios) else "the baseline's"
    fig.legend(
        *axes[0].get_legend_handles_labels(),
        loc="outside right upper",
        fontsize=8,
        title=f"scenario (median over draws;\nshaded: {which} 90% band)",
        title_fontsize=8,
    )
    ax = axes[-1]
    if baseline in scenarios:
        totals = ds.new_infections.sum("time")
        difference = (totals - totals.sel(scenario=baseline)).transpose("draw", "scenario")
        low, median, high = quantile_band(difference.values, axis=0)
        y = np.arange(len(scenarios))[::-1]
        ax.errorbar(
            median,
            y,
            xerr=[median - low, high - median],
            fmt="o",
            color="black",
            capsize=3,
            label="median, 90% interval over draws",
        )
        ax.set_yticks(y, [title_of(scenario) for scenario in scenarios], fontsize=8)
        ax.axvline(0, color="black", lw=0.5)
        ax.set_xlabel("total infections − baseline's (agents)")
        ax.set_title(f"difference from the baseline in the same {ds.sizes['draw']} posterior draws", fontsize=10)
        ax.legend(fontsize=7)
    else:
        ax.set_axis_off()
    intervention_legend(fig, spans)
    study = config_of(ds).get("study", "")
    fig.suptitle(
        f"{study + ': ' if study else ''}counterfactual scenarios over {ds.sizes['draw']} posterior draws "
        f"({ds.attrs.get('posterior', '')}); shaded: the study's interventions",
        fontsize=10,
    )
    return save_figure(fig, output_path, provenance_of(ds, Source=str(store_path)))
