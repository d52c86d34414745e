"""The private-demo figure (study `private-demo`, `diffabm.studies.private_demo`).

Left: daily new infections, median and 90% band over draws, of the plain model (solid) and of the model whose group
sums are computed by secret sharing (dashed), same seeds. Middle: their difference per day and draw (zero where
the two agree exactly). Right: the point-calibrated parameters of both beside the truth (or, without calibration,
the gradient of the total infections in each β).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from diffabm.figures.style import format_time_axis, plot_band, provenance_of, save_figure, unit_label
from diffabm.store import read_dataset

LABELS = {"none": "plain", "secret_sharing": "secret-shared"}
COLORS = {"none": "C0", "secret_sharing": "C3"}


def plot_private_demo(store_path: str | Path, png_path: str | Path) -> Path:
    """One PNG (and PDF) of `private_demo.zarr`."""
    ds = read_dataset(store_path)
    time = ds["time"].values
    fig, (curves, difference, bars) = plt.subplots(1, 3, figsize=(15, 4.4), constrained_layout=True)
    for privacy in ds["privacy"].values:
        style = {"ls": "--"} if privacy == "secret_sharing" else {}
        plot_band(
            curves,
            time,
            ds["new_infections"].sel(privacy=privacy).values,
            color=COLORS[str(privacy)],
            label=f"{LABELS[str(privacy)]}: median",
            band_label=f"{LABELS[str(privacy)]}: 90% band",
            **style,
        )
    curves.set(ylabel=unit_label("new_infections"), title="the same seeds, plain and secret-shared")
    format_time_axis(curves, time)
    curves.legend(fontsize="small")
    delta = ds["new_infections"].sel(privacy="secret_sharing") - ds["new_infections"].sel(privacy="none")
    for draw in range(delta.shape[0]):
        difference.plot(time, delta.values[draw], lw=1, label=f"draw {draw}")
    difference.axhline(0.0, color="k", lw=0.5)
    difference.set(
        ylabel="secret-shared − plain (agents/day)",
        title=f"difference: max |Δ| = {ds.attrs['max_abs_difference']:g} "
        f"({ds.attrs['parties']} parties, 2^-{ds.attrs['frac_bits']} resolution)",
    )
    format_time_axis(difference, time)
    difference.legend(fontsize="x-small")
    if ds.sizes.get("parameter", 0):
        names = [str(n) for n in ds["parameter"].values if str(n).startswith("beta_")]
        variable, title = "fitted", "point calibration"
        ylabel = "fitted value (natural scale)"
    else:
        names, variable, title = [str(n) for n in ds["beta"].values], "gradient", "gradient of the total infections"
        ylabel = "d total infections / d β (agents)"
    x = np.arange(len(names))
    for offset, privacy in ((-0.2, "none"), (0.2, "secret_sharing")):
        values = (
            ds[variable].sel(privacy=privacy).values
            if variable == "gradient"
            else [float(ds[variable].sel(privacy=privacy, parameter=name)) for name in names]
        )
        bars.bar(x + offset, values, width=0.4, color=COLORS[privacy], label=LABELS[privacy])
    if variable == "fitted" and np.isfinite(ds["truth"].values).any():
        bars.plot(x, [float(ds["truth"].sel(parameter=name)) for name in names], "k_", ms=18, mew=2, label="truth")
    bars.set_xticks(x, [name.replace("_", " ") for name in names], rotation=30, ha="right", fontsize="small")
    bars.set(ylabel=ylabel, title=title)
    bars.legend(fontsize="small")
    fig.suptitle(f"Private agent-based modelling: {int(ds.attrs['agents']):,} agents, secret-shared vs plain")
    return save_figure(fig, png_path, provenance_of(ds, Source=str(store_path)))
