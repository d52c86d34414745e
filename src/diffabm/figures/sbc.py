"""The simulation-based calibration figure (Talts et al. 2018, arXiv:1804.06788; study `sbc`).

Top row, one panel per parameter: the rank histogram of the truths among L posterior draws, with the
count every bin expects under uniform ranks and the band that holds each bin's count with probability
99% (Binomial(N, 1/B)); ∪-shaped is an over-confident posterior, ∩-shaped an under-confident one, a
slope a biased one; last, the coverage of the central 50% and 90% intervals with ± 1 binomial standard
error beside the nominal levels. Bottom row: the truth of each data set against the posterior median
with its 90% interval (recovery across the prior), and the numbers.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from diffabm.figures.style import provenance_of, save_figure
from diffabm.store import read_dataset


def plot_sbc(sbc_path: str | Path, output_path: str | Path) -> Path:
    """One PNG of `sbc.zarr` (stage `sbc_ranks`): rank histograms, truth vs posterior, coverage."""
    ds = read_dataset(sbc_path)
    names = [str(name) for name in ds.parameter.values]
    bins, rank_draws, datasets = int(ds.attrs["bins"]), int(ds.attrs["rank_draws"]), int(ds.attrs["datasets"])
    low, high = ds.attrs["band99"]
    columns = len(names) + 1
    fig, axes = plt.subplots(2, columns, figsize=(3.6 * columns, 7.0), constrained_layout=True, squeeze=False)
    width = (rank_draws + 1) / bins
    edges = np.arange(bins) * width
    for axis, name in zip(axes[0], names):
        counts = ds["counts"].sel(parameter=name).values
        axis.axhspan(low, high, color="0.85", label="99% band, uniform ranks")
        axis.axhline(datasets / bins, color="0.4", lw=1, label="expected")
        axis.bar(edges, counts, width=width, align="edge", color="C0", edgecolor="white", label="data sets")
        p_value = float(ds["summary_p_value"].sel(parameter=name))
        axis.set(
            xlim=(0, rank_draws + 1),
            ylim=(0, max(high, counts.max()) + 1),
            xlabel=f"rank of the truth among L = {rank_draws} draws",
            ylabel="data sets",
            title=f"{name}\nχ² p = {p_value:.2g}, contraction "
            f"{float(ds['summary_contraction'].sel(parameter=name)):.2f}",
        )
        axis.title.set_fontsize("small")
    axes[0][0].legend(fontsize="x-small", loc="upper right")

    for axis, name in zip(axes[1], names):
        truth, median = ds["truth"].sel(parameter=name).values, ds["q50"].sel(parameter=name).values
        error = np.stack([median - ds["q05"].sel(parameter=name).values, ds["q95"].sel(parameter=name).values - median])
        inside = ds["inside_90"].sel(parameter=name).values.astype(bool)
        for mask, color, label in ((inside, "C0", "truth inside 90%"), (~inside, "C3", "outside")):
            if mask.any():
                axis.errorbar(
                    truth[mask], median[mask], yerr=error[:, mask], fmt="o", ms=3, lw=0.8, color=color, label=label
                )
        span = [
            float(min(truth.min(), ds["q05"].sel(parameter=name).min())),
            float(max(truth.max(), ds["q95"].sel(parameter=name).max())),
        ]
        axis.plot(span, span, color="0.5", lw=0.8)
        if span[0] > 0 and span[1] / span[0] > 20:  # e.g. a log-normal prior
            axis.set(xscale="log", yscale="log")
        axis.set(xlabel=f"truth {name}", ylabel="posterior median, 90% interval")
        axis.legend(fontsize="x-small")

    axis = axes[0][-1]
    x = np.arange(len(names))
    for offset, level, color in ((-0.12, 50, "C1"), (0.12, 90, "C2")):
        coverage = ds[f"summary_coverage_{level}"].values
        se = ds[f"summary_se_{level}"].values
        axis.errorbar(x + offset, coverage, yerr=se, fmt="o", color=color, label=f"{level}% interval")
        axis.axhline(level / 100, color=color, lw=0.8, ls="--")
    axis.set(xticks=x, ylim=(0, 1.05), ylabel="coverage (± 1 binomial se)", title=f"coverage over {datasets} data sets")
    axis.set_xticklabels(names, rotation=20, fontsize="small")
    axis.legend(fontsize="x-small", loc="lower right")
    table = axes[1][-1]
    table.axis("off")
    lines = [
        f"{name}\n  χ² p = {float(ds['summary_p_value'].sel(parameter=name)):.2g}; coverage "
        f"{float(ds['summary_coverage_50'].sel(parameter=name)):.2f} (50%), "
        f"{float(ds['summary_coverage_90'].sel(parameter=name)):.2f} (90%)"
        for name in names
    ]
    table.text(
        0,
        1,
        "\n".join([f"N = {datasets} data sets, L = {rank_draws},", f"{bins} bins", "", *lines]),
        va="top",
        fontsize="small",
        family="monospace",
    )
    fig.suptitle(f"Simulation-based calibration: {datasets} data sets from the prior")
    return save_figure(fig, output_path, provenance_of(ds, Source=str(sbc_path)), dpi=110)
