"""The private-demo study: the epidemic simulated and calibrated plainly and by secret sharing, side by side.

DecABM (Chopra et al. 2024) claims that the decentralised model, whose neighbourhood sums are computed by additive
secret sharing, gives the same simulation and calibration as the centralised one. `write_private_demo` checks this
for the study's model with the same seeds in both modes (`model.privacy`: none, secret_sharing): the daily new
infections of `model.draws` draws at `model.parameters`, the reverse-mode gradient of the total infections in each
β, a point calibration (`calibration.point`, through `diffabm.calibration.stage.calibrate`) to the study's
observations, and the median wall time of `private_demo.repeats` simulations of each (interleaved).
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr
from omegaconf import DictConfig, read_write

from diffabm.build import build_model
from diffabm.calibration.stage import calibrate
from diffabm.models.base import Simulator
from diffabm.population.schema import read_population
from diffabm.store import read_dataset, write_dataset

log = logging.getLogger(__name__)
PRIVACIES = ("none", "secret_sharing")


def with_privacy(cfg: DictConfig, privacy: str) -> DictConfig:
    """A copy of `cfg` with `model.privacy` set."""
    cfg = cfg.copy()
    with read_write(cfg):
        cfg.model.privacy = privacy
    return cfg


def _parameters(model: Simulator, draws: int, gradient: bool) -> dict[str, torch.Tensor]:
    return {
        name: torch.full((draws,), float(value), requires_grad=gradient and name.startswith("beta_"))
        for name, value in model.defaults.items()
    }


def _point_fit(cfg: DictConfig, population_path: str | Path, observed_path: str | Path) -> dict[str, float]:
    """The point calibration's natural-scale estimate, run in a scratch directory."""
    with tempfile.TemporaryDirectory(prefix="diffabm-private-demo-") as run_dir:
        calibrate(cfg, "point", population_path, observed_path, run_dir)
        posterior = read_dataset(Path(run_dir) / "posterior.zarr")
        return {name: float(posterior[name].mean()) for name in posterior.data_vars}


def write_private_demo(
    cfg: DictConfig,
    population_path: str | Path,
    observed_path: str | Path,
    output_path: str | Path,
    table_path: str | Path,
) -> Path:
    """Write `private_demo.zarr` (per privacy: new infections (draw, time), gradient of the total infections and
    fitted parameters (parameter), simulation seconds (repeat)) and the comparison table (CSV)."""
    settings = cfg.private_demo
    population = read_population(population_path)
    models = {privacy: build_model(with_privacy(cfg, privacy), population) for privacy in PRIVACIES}
    draws = int(cfg.model.draws)
    seconds: dict[str, list[float]] = {privacy: [] for privacy in PRIVACIES}
    series: dict[str, np.ndarray] = {}
    for _ in range(int(settings.repeats)):  # interleaved: both modes see the same load
        for privacy, model in models.items():
            start = time.perf_counter()
            with torch.no_grad():
                output = model.simulate(_parameters(model, draws, False), seed=int(cfg.seed))
            seconds[privacy].append(time.perf_counter() - start)
            series[privacy] = output["new_infections"].cpu().numpy()
    gradients: dict[str, dict[str, float]] = {}
    for privacy, model in models.items():
        parameters = _parameters(model, draws, True)
        model.simulate(parameters, seed=int(cfg.seed))["new_infections"].sum().backward()
        gradients[privacy] = {
            name: float(value.grad.sum()) for name, value in parameters.items() if value.grad is not None
        }
    betas = sorted(gradients["none"])
    fits = {privacy: {} for privacy in PRIVACIES}
    if settings.calibrate:
        fits = {
            privacy: _point_fit(with_privacy(cfg, privacy), population_path, observed_path) for privacy in PRIVACIES
        }
    fitted = sorted(fits["none"])
    truth = {name: float(value) for name, value in (cfg.get("truth") or {}).items()}
    difference = np.abs(series["secret_sharing"] - series["none"])
    time_coord = models["none"].coords()["time"]
    ds = xr.Dataset(
        {
            "new_infections": (("privacy", "draw", "time"), np.stack([series[p] for p in PRIVACIES])),
            "gradient": (("privacy", "beta"), [[gradients[p][name] for name in betas] for p in PRIVACIES]),
            "fitted": (("privacy", "parameter"), np.array([[fits[p][n] for n in fitted] for p in PRIVACIES]))
            if fitted
            else (("privacy", "parameter"), np.zeros((len(PRIVACIES), 0))),
            "truth": (("parameter",), [truth.get(name, np.nan) for name in fitted]),
            "seconds": (("privacy", "repeat"), [seconds[p] for p in PRIVACIES]),
        },
        coords={"privacy": list(PRIVACIES), "time": time_coord, "beta": betas, "parameter": fitted},
        attrs={
            "parties": int(cfg.model.secret_sharing.parties),
            "frac_bits": int(cfg.model.secret_sharing.frac_bits),
            "agents": int(population.n_agents),
            "max_abs_difference": float(difference.max()),
            "differing_days": int((difference > 0).sum()),
        },
    )
    write_dataset(ds, output_path, cfg, int(cfg.seed))
    table = comparison_table(ds)
    Path(table_path).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(table_path, index=False)
    log.info("private vs plain:\n%s", table.to_string(index=False))
    return Path(output_path)


def comparison_table(ds: xr.Dataset) -> pd.DataFrame:
    """One row per compared quantity: plain, private, their difference (absolute; relative for gradients, the
    ratio for times) and the truth where there is one."""
    plain, private = ds.sel(privacy="none"), ds.sel(privacy="secret_sharing")
    rows = [
        ("total new infections (all draws)", float(plain.new_infections.sum()), float(private.new_infections.sum())),
    ]
    rows = [(*row, row[2] - row[1], "absolute", np.nan) for row in rows]
    rows.append(
        (
            "max |daily new infections difference|",
            np.nan,
            np.nan,
            float(ds.attrs["max_abs_difference"]),
            "absolute",
            np.nan,
        )
    )
    for name in ds.beta.values:
        a, b = float(plain.gradient.sel(beta=name)), float(private.gradient.sel(beta=name))
        rows.append((f"d total infections / d {name}", a, b, (b - a) / max(abs(a), 1e-30), "relative", np.nan))
    for name in ds.parameter.values:
        a, b = float(plain.fitted.sel(parameter=name)), float(private.fitted.sel(parameter=name))
        rows.append((f"fitted {name} (point)", a, b, b - a, "absolute", float(ds.truth.sel(parameter=name))))
    a, b = statistics.median(plain.seconds.values.tolist()), statistics.median(private.seconds.values.tolist())
    rows.append(("simulation seconds (median)", a, b, b / a, "ratio", np.nan))
    return pd.DataFrame(rows, columns=["quantity", "plain", "private", "difference", "difference_kind", "truth"])
