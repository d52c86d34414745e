"""Figure of stage `sensitivity` (`diffabm.sensitivity`): the methods side by side on the first output of interest
(derivative ± 2 SE per parameter, relative to the finite difference), a tornado chart of its elasticities
d log y / d log θ ranked by size, and, where outputs come per group (e.g. infections by age group), the
elasticity of each group's output to each parameter."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from diffabm.figures import provenance_of, save_figure  # noqa: E402
from diffabm.store import read_dataset  # noqa: E402

PREFERENCE = ("finite_difference", "stochastic", "reverse_mode", "forward_mode")  # whose elasticities to rank


def plot_sensitivity(sensitivity_path: str | Path, output_path: str | Path) -> Path:
    ds = read_dataset(sensitivity_path)
    methods, outputs, parameters = (list(ds[name].values) for name in ("method", "output", "parameter"))
    ranked_method = next(method for method in PREFERENCE if method in methods)
    grouped = [k for k, name in enumerate(outputs) if name.count(" ") >= 2]  # "<summary> <observable> <group>"
    fig, axes = plt.subplots(1, 3 if grouped else 2, figsize=(17 if grouped else 11, 4.8))
    first = 0

    ax = axes[0]
    scale = np.abs(ds.derivative.values[:, first]).max(0)
    scale[scale == 0] = 1.0
    width = 0.8 / len(methods)
    for m, method in enumerate(methods):
        x = np.arange(len(parameters)) + (m - (len(methods) - 1) / 2) * width
        ax.bar(x, ds.derivative.values[m, first] / scale, width, yerr=2 * ds.standard_error.values[m, first] / scale,
               label=f"{method} ({float(ds.cost.values[m]):.1f} forward runs)", capsize=2)
    ax.set_xticks(np.arange(len(parameters)), parameters, rotation=40, ha="right", fontsize=8)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_ylabel("d y / dθ ÷ max |method|  (± 2 SE)")
    ax.set_title(f"{outputs[first]}: the methods side by side", fontsize=10)
    ax.legend(fontsize=7)

    ax = axes[1]
    m = methods.index(ranked_method)
    elasticity = np.nan_to_num(ds.elasticity.values[m, first])
    order = np.argsort(np.abs(elasticity))
    ax.barh(np.arange(len(order)), elasticity[order], color=np.where(elasticity[order] >= 0, "tab:red", "tab:blue"))
    ax.set_yticks(np.arange(len(order)), [parameters[k] for k in order], fontsize=8)
    ax.axvline(0, color="black", lw=0.5)
    ax.set_xlabel("elasticity d log y / d log θ")
    ax.set_title(f"{outputs[first]}: ranked elasticities ({ranked_method})", fontsize=10)

    if grouped:
        ax = axes[2]
        values = ds.elasticity.values[m][grouped]
        limit = np.nanmax(np.abs(values)) or 1.0
        image = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
        ax.set_xticks(np.arange(len(parameters)), parameters, rotation=40, ha="right", fontsize=8)
        ax.set_yticks(np.arange(len(grouped)), [outputs[k] for k in grouped], fontsize=7)
        ax.set_title(f"elasticity by group ({ranked_method})", fontsize=10)
        fig.colorbar(image, ax=ax)
    fig.suptitle(f"One-shot sensitivity ({ds.attrs.get('model')}, {len(ds.attrs.get('seeds', []))} seeds × "
                 f"{ds.attrs.get('draws')} draws; SE over both)", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, output_path, provenance_of(ds))
