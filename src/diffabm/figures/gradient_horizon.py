"""Figures and table of the gradient-horizon study (Quera-Bofarull, Dyer et al. 2023, "Some challenges of
calibrating differentiable agent-based models", ICML workshop; study `bh-gradient-horizon`):

- Fig. 1: the flow's training loss by epoch for each gradient estimator (10-step moving average);
- Fig. 2: histograms over the flow's parameters φ_j of the spread of ∂E_q[ℓ]/∂φ_j per estimator;
- Fig. 5: the H = 0 posterior with the truth;
- Fig. 6: boxplots of gradient estimates per φ_j of a diagonal Gaussian q, with the score-function
  reference of many draws;
- the table: final loss, posterior mean ± sd per parameter, mean gradient sd and bias per estimator.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
import xarray as xr

from diffabm.calibration.datasets import read_posterior
from diffabm.figures.style import provenance_of, save_figure
from diffabm.store import atomic_write_text, read_dataset

MOVING_AVERAGE = 10


def study_arrays(ds: xr.Dataset, prefix: str) -> dict:
    """The study's arrays of one experiment (`gaussian_` or `flow_`) as the dict the plots take."""
    names = [name.removeprefix(prefix) for name in ds.data_vars if name.startswith(prefix)]
    arrays = {name: ds[prefix + name].values for name in names}
    return {
        **arrays,
        "estimators": list(ds.estimator.values),
        "phi_names": list(ds[f"{prefix}phi"].values),
        **{key: ds.attrs[f"{prefix}{key}"] for key in ("samples", "reference_samples") if f"{prefix}{key}" in ds.attrs},
    }


def plot_gradient_spread(spread: Mapping, path: str | Path, provenance: Mapping[str, str] | None = None) -> Path:
    """Fig. 2: histograms over φ_j of log10 sd of ∂E_q[ℓ]/∂φ_j, one per estimator (active φ_j only)."""
    sd = np.asarray(spread["sd"], dtype=float)
    active = np.asarray(spread.get("active", np.ones(sd.shape[1], dtype=bool)), dtype=bool)
    logs = {name: np.log10(row[active & (row > 0) & np.isfinite(row)]) for name, row in zip(spread["estimators"], sd)}
    finite = np.concatenate([v for v in logs.values() if v.size] or [np.zeros(1)])
    bins = np.linspace(np.floor(finite.min()), np.ceil(finite.max()) + 1e-9, 41)
    fig, axis = plt.subplots(figsize=(7, 4), constrained_layout=True)
    for name, values in logs.items():
        axis.hist(
            values,
            bins=bins,
            histtype="step",
            lw=1.5,
            label=f"{name} (median log10 sd {np.median(values):.2g})" if values.size else name,
        )
    axis.set(
        xlabel=r"$\log_{10}$ sd of $\partial\, \mathbb{E}_q[\ell] / \partial \phi_j$ over repeats",
        ylabel=r"number of flow parameters $\phi_j$",
        title=f"Brock & Hommes: spread of gradient estimates ({int(active.sum())} flow parameters)",
    )
    axis.legend(title="estimator")
    return save_figure(fig, path, provenance or {})


def plot_gradient_boxplots(estimates: Mapping, path: str | Path, provenance: Mapping[str, str] | None = None) -> Path:
    """Fig. 6: per φ_j, boxplots of the estimates per estimator (mean orange dashed, median green dashed) and the
    N-draw score reference (blue cross, error bar ±2 SE); symmetric-log y axis, as full-horizon estimates span
    many orders of magnitude."""
    values = np.asarray(estimates["estimates"], dtype=float)
    reference, se = np.asarray(estimates["reference"], float), np.asarray(estimates["reference_se"], float)
    names = list(estimates["estimators"])
    phi = list(estimates["phi_names"])
    columns = (len(phi) + 1) // 2
    fig, axes = plt.subplots(2, columns, figsize=(3.2 * columns, 7), constrained_layout=True, squeeze=False)
    positions = np.arange(1, len(names) + 1)
    for j, axis in enumerate(axes.flat):
        if j >= len(phi):
            axis.set_visible(False)
            continue
        data = [column[np.isfinite(column)] for column in values[:, :, j]]
        axis.boxplot(
            data,
            positions=positions,
            showmeans=True,
            meanline=True,
            showfliers=True,
            widths=0.6,
            medianprops={"color": "green", "linestyle": "--"},
            meanprops={"color": "orange", "linestyle": "--"},
            flierprops={"markersize": 2},
        )
        axis.errorbar(
            [len(names) + 1], [reference[j]], yerr=[2 * se[j]], fmt="x", color="blue", markersize=8, capsize=4
        )
        axis.axhline(reference[j], color="blue", lw=0.6, ls=":")
        linthresh = max(abs(float(reference[j])) + 2 * float(se[j]), 1e-12)
        axis.set_yscale("symlog", linthresh=linthresh)
        _sparse_symlog_ticks(axis, linthresh)
        axis.set_xticks([*positions, len(names) + 1], [*names, "ref"], rotation=45)
        axis.set(title=phi[j], ylabel=rf"$\partial\, \mathbb{{E}}_q[\ell] / \partial$ {phi[j]}")
    handles = [
        plt.Line2D([], [], color="orange", ls="--", label="mean"),
        plt.Line2D([], [], color="green", ls="--", label="median"),
        plt.Line2D([], [], color="blue", marker="x", ls="", label="score reference ±2 SE"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3)
    fig.suptitle(
        f"Brock & Hommes: {values.shape[1]} gradient estimates per estimator, "
        f"N = {estimates.get('samples', '?')} draws each; ref: score, N = {estimates.get('reference_samples', '?')}"
    )
    return save_figure(fig, path, provenance or {})


def _sparse_symlog_ticks(axis, linthresh: float, per_side: int = 4) -> None:
    """At most `per_side` decades each side of 0 as y ticks of a symmetric-log axis (every decade, over up to 20
    decades, would overlap), none within a decade of the linear range around 0."""
    low, high = axis.get_ylim()
    first = int(np.ceil(np.log10(linthresh))) + 1
    ticks, labels = [0.0], ["0"]
    for sign, end in ((1, high), (-1, -low)):
        if end <= 10.0**first:
            continue
        decades = list(range(first, int(np.floor(np.log10(end))) + 1))
        for k in decades[:: max(1, int(np.ceil(len(decades) / per_side)))]:
            ticks.append(sign * 10.0**k)
            labels.append(f"${'-' if sign < 0 else ''}10^{{{k}}}$")
    axis.set_yticks(ticks, labels)
    axis.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())


def plot_training_loss(metrics: Mapping[str, pd.DataFrame], path: Path, provenance: Mapping[str, str]) -> Path:
    """Fig. 1: the loss (E_q[MMD²] over the step's draws) by epoch per estimator: a moving average (solid) over the
    raw values (faint)."""
    fig, axis = plt.subplots(figsize=(7, 4), constrained_layout=True)
    for colour, (name, frame) in enumerate(metrics.items()):
        rows = frame.dropna(subset=["loss_epoch"])
        raw = rows["loss_epoch"].to_numpy()
        smooth = pd.Series(raw).rolling(MOVING_AVERAGE, min_periods=1).mean()
        axis.plot(rows["epoch"], raw, color=f"C{colour}", lw=0.5, alpha=0.35)
        axis.plot(rows["epoch"], smooth, color=f"C{colour}", lw=1.5, label=name)
    axis.set_yscale("log")
    axis.set(
        xlabel="epoch (one step of 5 draws)",
        ylabel="loss: mean MMD² of the step's draws",
        title=f"Brock & Hommes: training loss ({MOVING_AVERAGE}-epoch moving average)",
    )
    axis.legend(title="gradient estimator")
    return save_figure(fig, path, provenance)


def plot_posterior(
    posterior: xr.Dataset, names: list[str], truth: Mapping[str, float], path: Path, provenance: Mapping[str, str]
) -> Path:
    """Fig. 5: the posterior's marginals and pairs with the truth."""
    size = len(names)
    fig, axes = plt.subplots(size, size, figsize=(2.4 * size, 2.4 * size), constrained_layout=True, squeeze=False)
    for row, y_name in enumerate(names):
        for column, x_name in enumerate(names):
            axis = axes[row, column]
            if column > row:
                axis.set_visible(False)
                continue
            x = posterior[x_name].values
            if row == column:
                axis.hist(x, bins=40, density=True, alpha=0.7, label="posterior")
            else:
                axis.plot(x, posterior[y_name].values, ".", ms=1.5, alpha=0.4)
                axis.axhline(truth[y_name], color="C3", lw=1)
            axis.axvline(truth[x_name], color="C3", lw=1, label="truth")
            if row == column == 0:
                axis.legend(fontsize="x-small")
            if row == size - 1:
                axis.set_xlabel(x_name)
            if column == 0:
                axis.set_ylabel(y_name if row > 0 else "density")
    fig.suptitle(f"Brock & Hommes: posterior of the H = 0 flow ({posterior.sizes['draw']} draws; red: truth)")
    return save_figure(fig, path, provenance)


def summary_table(
    study: xr.Dataset,
    posteriors: Mapping[str, xr.Dataset],
    metrics: Mapping[str, pd.DataFrame],
    names: list[str],
    tail: int = 50,
) -> pd.DataFrame:
    """Per estimator: the flow's loss over its last `tail` epochs, posterior mean ± sd per parameter, and of the
    Gaussian experiment the mean over φ_j of the estimates' sd, and the largest |mean − reference| in combined
    standard errors (sd/√repeats and the reference's SE)."""
    rows = []
    estimates = study["gaussian_estimates"]
    reference, reference_se = study["gaussian_reference"].values, study["gaussian_reference_se"].values
    repeats = estimates.sizes["repeat"]
    for name in posteriors:
        frame = metrics[name].dropna(subset=["loss_epoch"])
        row = {"estimator": name, "final_loss": float(frame["loss_epoch"].tail(tail).mean())}
        for parameter in names:
            draws = posteriors[name][parameter].values
            row[f"{parameter}_mean"], row[f"{parameter}_sd"] = float(draws.mean()), float(draws.std())
        if name in list(study.estimator.values):
            values = estimates.sel(estimator=name).values
            mean, sd = values.mean(0), values.std(0, ddof=1)
            row["gradient_sd"] = float(np.mean(sd))
            row["gradient_bias"] = float(np.mean(np.abs(mean - reference)))
            row["bias_in_se"] = float(np.max(np.abs(mean - reference) / np.sqrt(sd**2 / repeats + reference_se**2)))
        rows.append(row)
    return pd.DataFrame(rows)


def gradient_horizon_report(
    cfg,
    study_path: str | Path,
    posteriors: Mapping[str, str | Path],
    metrics: Mapping[str, str | Path],
    figures_dir: str | Path,
    table_path: str | Path,
) -> Path:
    """Stage `gradient_horizon_report`: Figs. 1, 2, 5 and 6 (PNG and PDF) in `figures_dir` and the table as CSV.
    `posteriors` and `metrics` map each estimator (the study's `calibration.variants`) to its flow's stores."""
    study = read_dataset(study_path)
    provenance = provenance_of(study)
    frames = {name: pd.read_csv(path) for name, path in metrics.items()}
    stores = {name: read_posterior(path) for name, path in posteriors.items()}  # (chain, draw) as one `draw`
    names = list(cfg.calibration.prior)
    figures_dir = Path(figures_dir)
    plot_training_loss(frames, figures_dir / "fig1_training_loss.png", provenance)
    plot_gradient_spread(study_arrays(study, "flow_"), figures_dir / "fig2_gradient_spread.png", provenance)
    first = "H0" if "H0" in stores else next(iter(stores))
    plot_posterior(stores[first], names, dict(cfg.truth), figures_dir / "fig5_posterior.png", provenance)
    plot_gradient_boxplots(study_arrays(study, "gaussian_"), figures_dir / "fig6_gradient_estimates.png", provenance)
    table = summary_table(study, stores, frames, names)
    return atomic_write_text(table_path, table.to_csv(index=False, float_format="%.6g"))
