"""Simulated trajectories of any model: one panel per observable over time, the median and 5–95% band over
draws for a series (draw, time), and the median per category for (draw, time, category) (e.g. stage, age)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from diffabm.figures import provenance_of, save_figure  # noqa: E402
from diffabm.store import read_dataset  # noqa: E402


def plot_simulation(simulation_path: str | Path, output_path: str | Path) -> Path:
    """Plot every observable of `simulation.zarr` that has a `time` dimension; provenance in the PNG metadata."""
    ds = read_dataset(simulation_path)
    names = [name for name in ds.data_vars if ds[name].dims[:2] == ("draw", "time") and ds[name].ndim <= 3]
    if not names:
        raise ValueError(f"store {simulation_path}: no series with dimensions (draw, time) to plot")
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.4), constrained_layout=True, squeeze=False)
    time = ds.time.values
    for axis, name in zip(axes[0], names):
        series = ds[name]
        if series.ndim == 2:
            low, mid, high = (series.quantile(q, dim="draw") for q in (0.05, 0.5, 0.95))
            axis.fill_between(time, low, high, alpha=0.3, label="5–95% over draws")
            axis.plot(time, mid, label="median")
        else:
            category = series.dims[2]
            median = series.median("draw")
            for label in ds[category].values:
                axis.plot(time, median.sel({category: label}), label=str(label).replace("_", " "))
            if np.nanmax(median.values) > 100 * max(np.nanmin(median.values[median.values > 0], initial=1.0), 1.0):
                axis.set_yscale("symlog")
        axis.set(title=name.replace("_", " "), xlabel="date" if np.issubdtype(time.dtype, np.datetime64) else "step")
        axis.tick_params(axis="x", labelrotation=45)
        axis.legend(fontsize="x-small")
    fig.suptitle(f"{ds.sizes['draw']} draws")
    return save_figure(fig, output_path, provenance_of(ds, Source=str(simulation_path)), dpi=110)
