"""Figure of stage `sensitivity` (`diffabm.sensitivity`): the methods side by side on the first output of interest
(derivative ± 2 SE per parameter), a tornado chart of its elasticities d log y / d log θ ranked by size, its
derivatives at posterior draws, and, where infections come per group (age group, ethnicity, region), each
group's elasticity to each layer's β by AD with the finite-difference check beside (the source tutorial's "how
sensitive was infection to age / ethnicity")."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch

from diffabm.figures.style import provenance_of, save_figure
from diffabm.store import read_dataset

PREFERENCE = ("finite_difference", "stochastic", "reverse_mode", "forward_mode")  # whose elasticities to rank
AD_PREFERENCE = ("reverse_mode", "forward_mode", "checkpointed_reverse_mode", "stochastic")  # beside FD by group


def plot_sensitivity(sensitivity_path: str | Path, output_path: str | Path) -> Path:
    """Top: the methods side by side, the tornado chart, and the derivatives at posterior draws; bottom, one panel
    per grouping of infections (age group, ethnicity, region): each group's elasticity to each parameter by AD
    with the finite difference beside."""
    ds = read_dataset(sensitivity_path)
    methods = list(ds.method.values)
    groupings = (
        [g for g in dict.fromkeys(ds.grouping.values) if g and _infection_outputs(ds, g).size > 1]
        if "grouping" in ds.variables
        else []
    )
    columns = max(3, len(groupings))
    fig, axes = plt.subplots(
        2 if groupings else 1, columns, figsize=(5.8 * columns, 9.6 if groupings else 4.8), squeeze=False
    )
    _methods_side_by_side(axes[0, 0], ds)
    _tornado(axes[0, 1], ds, next(method for method in PREFERENCE if method in methods))
    if "derivative_by_draw" in ds:
        _posterior_draws(axes[0, 2], ds)
    else:
        axes[0, 2].set_axis_off()
    for ax in axes[0, 3:]:
        ax.set_axis_off()
    for k, grouping in enumerate(groupings):
        _by_group(axes[1, k], ds, grouping)
    for ax in axes[1, len(groupings) :] if groupings else ():
        ax.set_axis_off()
    fig.suptitle(
        f"One-shot sensitivity ({ds.attrs.get('model')}, {len(ds.attrs.get('seeds', []))} seeds × "
        f"{ds.attrs.get('draws')} draws; SE over both)",
        fontsize=11,
    )
    fig.tight_layout()
    return save_figure(fig, output_path, provenance_of(ds, Source=str(sensitivity_path)))


def _methods_side_by_side(ax, ds, first: int = 0) -> None:
    """d y/dθ of the first output per parameter by each method, ± 2 SE, scaled by the largest |method|."""
    methods, parameters = list(ds.method.values), list(ds.parameter.values)
    scale = np.abs(ds.derivative.values[:, first]).max(0)
    scale[scale == 0] = 1.0
    width = 0.8 / len(methods)
    for m, method in enumerate(methods):
        x = np.arange(len(parameters)) + (m - (len(methods) - 1) / 2) * width
        ax.bar(
            x,
            ds.derivative.values[m, first] / scale,
            width,
            yerr=2 * ds.standard_error.values[m, first] / scale,
            label=f"{method} ({float(ds.cost.values[m]):.1f} forward runs)",
            capsize=2,
        )
    ax.set_xticks(np.arange(len(parameters)), parameters, rotation=40, ha="right", fontsize=8)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_ylabel("d y / dθ ÷ max |method|  (± 2 SE)")
    ax.set_xlabel("parameter θ")
    ax.set_title(f"{ds.output.values[first]}: the methods side by side", fontsize=10)
    ax.legend(fontsize=7)


def _tornado(ax, ds, method: str, first: int = 0) -> None:
    """The first output's elasticities d log y / d log θ by `method`, ranked by size."""
    parameters = list(ds.parameter.values)
    elasticity = np.nan_to_num(ds.elasticity.values[list(ds.method.values).index(method), first])
    order = np.argsort(np.abs(elasticity))
    ax.barh(np.arange(len(order)), elasticity[order], color=np.where(elasticity[order] >= 0, "tab:red", "tab:blue"))
    ax.legend(
        handles=[
            Patch(color="tab:red", label="y increases with θ"),
            Patch(color="tab:blue", label="y decreases with θ"),
        ],
        fontsize=7,
        loc="lower right",
    )
    ax.set_yticks(np.arange(len(order)), [parameters[k] for k in order], fontsize=8)
    ax.axvline(0, color="black", lw=0.5)
    ax.set_xlabel("elasticity d log y / d log θ")
    ax.set_title(f"{ds.output.values[first]}: ranked elasticities ({method})", fontsize=10)


def _posterior_draws(ax, ds, first: int = 0) -> None:
    """The first output's derivatives at each posterior draw (± 2 SE), relative to those at the posterior mean."""
    parameters = list(ds.parameter.values)
    method = ds.attrs["by_draw_method"]
    at_mean = (
        ds.derivative.values[list(ds.method.values).index(method), first]
        if method in ds.method.values
        else np.abs(ds.derivative_by_draw.values[:, first]).mean(0)
    )
    scale = np.where(np.abs(at_mean) > 0, np.abs(at_mean), 1.0)
    draws = ds.sizes["posterior_draw"]
    for k in range(draws):
        x = np.arange(len(parameters)) + (k - (draws - 1) / 2) * 0.7 / max(draws, 1)
        ax.errorbar(
            x,
            ds.derivative_by_draw.values[k, first] / scale,
            yerr=2 * ds.standard_error_by_draw.values[k, first] / scale,
            fmt="o",
            ms=3,
            capsize=1.5,
            color=plt.cm.viridis(k / max(draws - 1, 1)),
            label=f"posterior draw {k + 1}" if k in (0, draws - 1) else None,
        )
    ax.axhline(1, color="black", lw=0.5, ls="--", label="as at the posterior mean")
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xticks(np.arange(len(parameters)), parameters, rotation=40, ha="right", fontsize=8)
    ax.set_ylabel("d y / dθ at a draw ÷ |at the posterior mean|  (± 2 SE)")
    ax.set_xlabel("parameter θ")
    ax.legend(fontsize=7, title=f"colour: draw 1 … {draws}", title_fontsize=7)
    ax.set_title(f"{ds.output.values[first]}: over {draws} posterior draws ({method})", fontsize=10)


def _infection_outputs(ds, grouping: str) -> np.ndarray:
    """Indices of the outputs of total infections per group of `grouping`."""
    return np.array(
        [
            k
            for k, (g, summary, observable) in enumerate(
                zip(ds.grouping.values, ds.summary.values, ds.observable.values)
            )
            if g == grouping and summary == "total" and str(observable).startswith("infections_by_")
        ],
        dtype=int,
    )


def _by_group(ax, ds, grouping: str) -> None:
    """Elasticity of each group's total infections to each parameter by AD (bars) and by finite differences (black,
    ± 2 SE) beside: how sensitive infection was in each age group, ethnicity or region."""
    methods, parameters = list(ds.method.values), list(ds.parameter.values)
    rows = _infection_outputs(ds, grouping)
    method = next((m for m in AD_PREFERENCE if m in methods), methods[0])
    shown = [p for p, name in enumerate(parameters) if name.startswith("beta_")] or list(range(len(parameters)))
    width = 0.8 / len(shown)
    relative_se = ds.standard_error / ds.derivative.where(ds.derivative != 0)
    for j, p in enumerate(shown):
        x = np.arange(rows.size) + (j - (len(shown) - 1) / 2) * width
        ax.bar(x, ds.elasticity.values[methods.index(method), rows, p], width, label=parameters[p])
        if "finite_difference" in methods:
            m = methods.index("finite_difference")
            value = ds.elasticity.values[m, rows, p]
            ax.errorbar(
                x,
                value,
                yerr=2 * np.abs(value * relative_se.values[m, rows, p]),
                fmt="_",
                color="black",
                ms=6,
                capsize=1.5,
                label="finite difference ± 2 SE" if j == 0 else None,
            )
    ax.set_xticks(np.arange(rows.size), ds.group.values[rows], rotation=30, ha="right", fontsize=8)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_ylabel("elasticity d log(infections) / d log θ")
    ax.set_xlabel(grouping.replace("_", " "))
    ax.set_title(f"infections by {grouping.replace('_', ' ')}: {method} (bars), finite differences (black)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
