"""Figure of stage `counterfactual` (`diffabm.counterfactual`): per scenario, the median and 90% band over the
posterior draws of daily infections, reported cases (beside the observed ones) and deaths; and each scenario's
total infections minus the baseline's in the same draws."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from diffabm.figures import provenance_of, save_figure  # noqa: E402
from diffabm.store import read_dataset  # noqa: E402

PANELS = (("new_infections", "daily infections (agents)"), ("reported_cases", "daily reported cases (people)"),
          ("deaths", "daily deaths (agents)"))


def plot_counterfactuals(store_path: str | Path, output_path: str | Path, observed_path: str | Path | None = None
                         ) -> Path:
    ds = read_dataset(store_path)
    observed = read_dataset(observed_path) if observed_path is not None else None
    panels = [(name, label) for name, label in PANELS if name in ds]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(5.2 * (len(panels) + 1), 4.4))
    scenarios = list(ds.scenario.values)
    baseline = ds.attrs.get("baseline")
    colours = {scenario: plt.cm.tab10(k % 10) for k, scenario in enumerate(scenarios)}
    time = ds.time.values
    for ax, (name, label) in zip(axes, panels):
        for scenario in scenarios:
            values = ds[name].sel(scenario=scenario).values  # (draw, time)
            low, median, high = np.quantile(values, [0.05, 0.5, 0.95], axis=0)
            ax.plot(time, median, color=colours[scenario], lw=1.6 if scenario == baseline else 1.0, label=scenario)
            ax.fill_between(time, low, high, color=colours[scenario], alpha=0.15, lw=0)
        if observed is not None and name in observed:
            ax.plot(observed.time.values, observed[name].values, "k.", ms=3, label="observed")
        ax.set_ylabel(label)
        ax.set_yscale("symlog", linthresh=1.0)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%d %b"))
        ax.tick_params(axis="x", rotation=30, labelsize=8)
        ax.set_title(f"{name.replace('_', ' ')}: median and 90% band", fontsize=10)
    axes[0].legend(fontsize=7)
    ax = axes[-1]
    if baseline in scenarios:
        totals = ds.new_infections.sum("time")
        difference = totals - totals.sel(scenario=baseline)
        low, median, high = (np.quantile(difference.values, q, axis=1) for q in (0.025, 0.5, 0.975))
        y = np.arange(len(scenarios))
        ax.errorbar(median, y, xerr=[median - low, high - median], fmt="o", color="black", capsize=3)
        ax.set_yticks(y, scenarios, fontsize=8)
        ax.axvline(0, color="black", lw=0.5)
        ax.set_xlabel("total infections − baseline (agents; median, 95% interval)")
        ax.set_title("in the same posterior draws", fontsize=10)
    else:
        ax.set_axis_off()
    fig.suptitle(f"Counterfactual scenarios over {ds.sizes['draw']} posterior draws ({ds.attrs.get('posterior', '')})",
                 fontsize=10)
    fig.tight_layout()
    return save_figure(fig, output_path, provenance_of(ds))
