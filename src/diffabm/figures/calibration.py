"""Calibration figures: loss by epoch, posterior corner plot with prior and truth, and the
observed series against the posterior-predictive median and 90% band, and a calibrated control (Calib-NN's
weekly β multiplier).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from diffabm.figures import provenance_of, save_figure  # noqa: E402
from diffabm.store import read_dataset  # noqa: E402


def plot_calibration(cfg: DictConfig, posterior_path: str | Path, fit_path: str | Path, metrics_path: str | Path,
                     output_path: str | Path) -> Path:
    """One PNG: loss vs epoch, observed vs posterior predictive, and a corner plot of the posterior."""
    posterior, fit = read_dataset(posterior_path), read_dataset(fit_path)
    metrics = pd.read_csv(metrics_path)
    names = list(cfg.calibration.prior)
    truth = posterior.attrs.get("truth", {})
    fig = plt.figure(figsize=(3.0 * max(len(names), 3), 3.0 * (len(names) + 1)), constrained_layout=True)
    grid = fig.add_gridspec(len(names) + 1, max(len(names), 3))

    loss_axis = fig.add_subplot(grid[0, 0])
    loss_column = "objective_epoch" if "objective_epoch" in metrics else "loss_epoch"
    by_epoch = metrics.dropna(subset=[loss_column])
    for member, rows in by_epoch.groupby(by_epoch["member"] if "member" in by_epoch else np.zeros(len(by_epoch))):
        loss_axis.plot(rows["epoch"], rows[loss_column], lw=1)
    loss_axis.set(xlabel="epoch", ylabel=loss_column.removesuffix("_epoch"), title="training loss")

    for column, name in enumerate(fit.attrs["observables"], start=1):
        axis = fig.add_subplot(grid[0, column])
        simulated, observed = (fit[key].sum([dim for dim in fit[key].dims if dim not in ("draw", "time")])
                               for key in (name, f"observed_{name}"))
        low, mid, high = (simulated.quantile(q, dim="draw") for q in (0.05, 0.5, 0.95))
        axis.fill_between(fit.time.values, low, high, alpha=0.3, label="90% predictive")
        axis.plot(fit.time.values, mid, label="predictive median")
        axis.plot(fit.time.values, observed, "k.", ms=3, label="observed")
        axis.set(title=name.replace("_", " "))
        axis.tick_params(axis="x", labelrotation=45)
        axis.legend(fontsize="x-small")

    free_column = len(fit.attrs["observables"]) + 1
    controls = [name for name in posterior.data_vars if posterior[name].dims == ("draw", "time")]
    if controls and free_column < max(len(names), 3):  # a calibrated control, e.g. Calib-NN's weekly β multiplier
        axis = fig.add_subplot(grid[0, free_column])
        axis.step(posterior.time.values, posterior[controls[0]].isel(draw=0).values, where="post")
        axis.axhline(1.0, color="grey", lw=0.5)
        axis.set(title=controls[0].replace("_", " "), ylabel="value")
        axis.tick_params(axis="x", labelrotation=45)

    prior = {name: OmegaConf.to_container(cfg.calibration.prior[name]) for name in names}
    for row, y_name in enumerate(names):
        for column, x_name in enumerate(names[: row + 1]):
            axis = fig.add_subplot(grid[row + 1, column])
            x = posterior[x_name].values
            if row == column:
                axis.hist(x, bins=30, density=True, alpha=0.6, label="posterior")
                grid_x = np.linspace(*np.quantile(x, [0.0, 1.0]) * np.array([0.8, 1.2]) + [0, 1e-9], 200)
                spec = dict(prior[x_name])
                family = getattr(torch.distributions, spec.pop("distribution"))
                density = family(**{k: torch.tensor(float(v)) for k, v in spec.items()}, validate_args=False)
                axis.plot(grid_x, density.log_prob(torch.as_tensor(grid_x)).exp().numpy(), label="prior")
                axis.set_title(x_name, fontsize="small")
            else:
                axis.plot(x, posterior[y_name].values, ".", ms=2, alpha=0.5)
                if y_name in truth:
                    axis.axhline(truth[y_name], color="C3", lw=1)
            if x_name in truth:
                axis.axvline(truth[x_name], color="C3", lw=1, label="truth")
            if row == column == 0:
                axis.legend(fontsize="x-small")
    kind = posterior.attrs.get("kind", f"{posterior.sizes['draw']} draws")
    fig.suptitle(f"{cfg.study}: {posterior.attrs.get('mode', '')} calibration, {kind}")
    return save_figure(fig, output_path, provenance_of(posterior, Source=str(posterior_path)), dpi=110)
