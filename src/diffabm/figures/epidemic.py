"""Epidemic curves: daily series over draws (median and 90% band) and stage counts."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from diffabm.store import read_dataset  # noqa: E402

SERIES = ("new_infections", "cases", "hospitalisations", "deaths")


def plot_epidemic_curve(simulation_path: str | Path, output_path: str | Path) -> Path:
    """Plot the daily series of `simulation.zarr` (median, 5–95% over draws) and stage counts."""
    ds = read_dataset(simulation_path)
    fig, axes = plt.subplots(1, len(SERIES) + 1, figsize=(4 * (len(SERIES) + 1), 3.4), constrained_layout=True)
    for ax, name in zip(axes, SERIES):
        series = ds[name]
        low, mid, high = (series.quantile(q, dim="draw") for q in (0.05, 0.5, 0.95))
        ax.fill_between(ds.time.values, low, high, alpha=0.3, label="5–95% over draws")
        ax.plot(ds.time.values, mid, label="median")
        ax.set_title(name.replace("_", " "))
        ax.tick_params(axis="x", labelrotation=45)
    axes[0].legend(fontsize="small")
    stages = ds["stage_counts"].median("draw")
    for stage in ds.stage.values:
        if stage != "susceptible":
            axes[-1].plot(ds.time.values, stages.sel(stage=stage), label=str(stage).replace("_", " "))
    axes[-1].set_title("agents by stage (median)")
    axes[-1].set_yscale("symlog")
    axes[-1].legend(fontsize="x-small")
    axes[-1].tick_params(axis="x", labelrotation=45)
    fig.suptitle(f"{ds.sizes['draw']} draws, {int(ds['stage_counts'].isel(draw=0, time=0).sum())} agents")
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_path.with_name(f".{output_path.stem}.tmp{output_path.suffix}")
    provenance = {key: str(ds.attrs.get(key, "")) for key in ("config", "seed", "git_commit", "diffabm_version")}
    fig.savefig(tmp, dpi=120, metadata={"Source": str(simulation_path), **provenance})
    plt.close(fig)
    tmp.replace(output_path)
    return output_path
