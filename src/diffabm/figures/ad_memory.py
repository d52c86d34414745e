"""The AD memory figure (study `ad-memory`; Quera-Bofarull et al. 2023, GradABM-JUNE, Fig. 3).

Left: memory per 1,000 agents of one gradient against the number of simulated days, per AD mode and for the
simulation without gradients, with the fitted curves (dashed); beside it the whole peak over the agents (squares,
with `small_agents`: it includes the fixed bytes) and the live tensors' peak over the agents (crosses), a check of
the resident-set measurement. Middle: the wall time of each, and its CPU time over all threads. Right: the fits
extrapolated to England (53 M agents, 300 days) beside the paper's reverse- and forward-mode figures, on a log
scale.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

from diffabm.figures.style import provenance_of, save_figure
from diffabm.store import read_dataset

LABELS = {
    "reverse": "reverse mode",
    "forward": "forward mode",
    "checkpointed": "checkpointed reverse",
    "no_gradient": "no gradient (simulation only)",
}
COLORS = {"reverse": "C3", "forward": "C0", "checkpointed": "C2", "no_gradient": "0.4"}


def plot_ad_memory(store_path: str | Path, png_path: str | Path) -> Path:
    """One PNG of `ad_memory.zarr` (stage `ad-memory`): memory and wall time against days, England's estimate."""
    ds = read_dataset(store_path)
    modes = [str(mode) for mode in ds["mode"].values]
    days = ds["days"].values.astype(float)
    agents = int(ds.attrs["agents"])
    fig, (memory, seconds, england) = plt.subplots(1, 3, figsize=(15, 4.6), constrained_layout=True)
    for mode in modes:
        row = ds.sel(mode=mode)
        color, label = COLORS.get(mode, "k"), LABELS.get(mode, mode)
        memory.plot(days, row["mb_per_1000_agents"].values, "o-", color=color, label=f"{label}: {row.fit_form.item()}")
        memory.plot(days, row["tensor_mb_per_1000_agents"].values, "x", color=color, ms=7)
        if "fixed_bytes" in ds:
            memory.plot(days, row["total_mb_per_1000_agents"].values, "s", color=color, mfc="none", ms=6)
        memory.plot(ds["curve_days"].values, row["fit_mb_per_1000_agents"].values, "--", color=color, lw=0.8)
        seconds.plot(days, row["seconds"].values, "o-", color=color, label=label)
        seconds.plot(days, row["cpu_seconds"].values, ":", color=color)
    memory.plot([], [], "x", color="k", label="live tensors' peak / agents (check)")
    if "fixed_bytes" in ds:
        memory.plot([], [], "s", color="k", mfc="none", label="whole peak / agents")
        title = f"memory per agent of one gradient\n(Δpeak between {agents:,} and {ds.attrs['small_agents']:,} agents)"
    else:
        title = f"peak memory of one gradient\n{agents:,} agents"
    memory.set(xlabel="days simulated T", ylabel="peak memory per 1,000 agents (MB)", ylim=(0, None), title=title)
    memory.legend(fontsize="x-small", title="measured (o), fit (--)", title_fontsize="x-small")
    seconds.plot([], [], ":", color="k", label="CPU time, all threads")
    seconds.set(
        xlabel="days simulated T",
        ylabel="time of one gradient (s)",
        xscale="log",
        yscale="log",
        title=f"wall time (o) and CPU time (:) of one gradient\nmedian of {int(ds.attrs['repeats'])} runs, "
        f"{int(ds.attrs['threads'])} threads",
    )
    seconds.set_xticks(days, [f"{day:g}" for day in days])
    seconds.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    seconds.legend(fontsize="x-small")

    ours, paper = ds["england_gb"].values, ds["paper_england_gb"].values
    x = np.arange(len(modes))
    england.bar(x - 0.2, ours, width=0.4, color=[COLORS.get(mode, "k") for mode in modes], label="this model (fit)")
    has_paper = np.isfinite(paper)
    england.bar(
        x[has_paper] + 0.2,
        paper[has_paper],
        width=0.4,
        color="none",
        edgecolor="k",
        hatch="//",
        label="paper, GradABM-JUNE (Fig. 3)",
    )
    for position, value in [*zip(x - 0.2, ours), *zip(x[has_paper] + 0.2, paper[has_paper])]:
        england.annotate(
            f"{value:,.0f} GB" if value >= 100 else f"{value:.3g} GB",
            (position, value),
            ha="center",
            va="bottom",
            fontsize="x-small",
        )
    england.set(
        yscale="log",
        ylabel="peak memory (GB)",
        xticks=x,
        title=f"extrapolated to England\n{ds.attrs['england_agents'] / 1e6:.0f} M agents, "
        f"{int(ds.attrs['england_days'])} days",
    )
    england.set_xticklabels([LABELS.get(mode, mode) for mode in modes], rotation=15, fontsize="small")
    england.legend(fontsize="x-small", loc="upper right")
    fig.suptitle(
        "Memory of automatic differentiation through the epidemic model (cf. Quera-Bofarull et al. 2023, Fig. 3)"
    )
    return save_figure(fig, png_path, provenance_of(ds, Source=str(store_path)), dpi=110)
