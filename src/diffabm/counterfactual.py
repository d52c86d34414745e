"""Stage `counterfactual`: policy scenarios rerun over a calibrated posterior, stored in Zarr.

A scenario (`counterfactual.scenarios.<name>`) is a list of edits of the study's interventions by their `name`:
`drop` them, `shift_start` / `shift_end` by days (within the simulated days), or `set` fields (e.g. an
isolation's `compliance`). Every scenario simulates the same `counterfactual.draws` posterior draws with the same
seed as the baseline (common random numbers), so differences between scenarios are differences in the same draws
(the counterfactual design of Kerr et al. 2021, "Covasim", PLOS Comput Biol 17:e1009149, and of the GradABM
papers' policy experiments). One store per scenario (`counterfactuals/<scenario>.zarr`, one job each);
`merge_counterfactuals` stacks them into `counterfactuals.zarr` (scenario, draw, time[, group]) with a summary
table: median and 95% interval of total infections, hospitalisations and deaths per scenario, and of their
difference to the baseline in the same draws.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr
from omegaconf import DictConfig, OmegaConf

from diffabm.build import build_model
from diffabm.calibration.datasets import spread_posterior_draws
from diffabm.store import as_object_strings, atomic_write_text, read_dataset, write_dataset

log = logging.getLogger(__name__)

STORED = (
    "new_infections",
    "reported_cases",
    "hospitalisations",
    "deaths",
    "infections_by_age",
    "infections_by_region",
    "deaths_by_age",
)  # the observables a scenario keeps, where the model has them
TOTALS = ("new_infections", "hospitalisations", "deaths")  # summarised per scenario
BASELINE = "baseline"


def _shifted(value: object, days: int, start_date: dt.date) -> object:
    """A day (number or ISO date) moved by `days`, in the same form."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value + days
    return (dt.date.fromisoformat(str(value)) + dt.timedelta(days=days)).isoformat()


def scenario_interventions(
    interventions: Sequence[Mapping], edits: Sequence[Mapping], scenario: str, start_date: dt.date
) -> list[dict]:
    """The interventions with a scenario's edits applied; an edit naming no intervention is an error."""
    result = [dict(spec) for spec in interventions]
    names = {spec.get("name") for spec in result}
    for index, edit in enumerate(edits):
        field = f"counterfactual.scenarios.{scenario}[{index}]"
        if edit["name"] not in names:
            raise ValueError(
                f"{field}.name is {edit['name']!r}: no intervention has that name "
                f"(named: {sorted(n for n in names if n)})"
            )
        chosen = [spec for spec in result if spec.get("name") == edit["name"]]
        if edit.get("drop"):
            result = [spec for spec in result if spec.get("name") != edit["name"]]
            continue
        for spec in chosen:
            for key, bound in (("shift_start", "start"), ("shift_end", "end")):
                if edit.get(key):
                    if bound not in spec:
                        raise ValueError(f"{field}.{key}: intervention {edit['name']!r} has no {bound}")
                    spec[bound] = _shifted(spec[bound], int(edit[key]), start_date)
            spec.update(dict(edit.get("set") or {}))
    return result


def simulate_scenario(
    cfg: DictConfig, scenario: str, population_path: str | Path | None, posterior_path: str | Path
) -> xr.Dataset:
    """One scenario over the posterior draws: its observables (draw, time[, group]) with the study seed."""
    settings = cfg.counterfactual
    if scenario not in settings.scenarios:
        raise ValueError(
            f"counterfactual scenario {scenario!r} is not in counterfactual.scenarios {sorted(settings.scenarios)}"
        )
    start = dt.date.fromisoformat(str(cfg.start_date))
    edits = OmegaConf.to_container(settings.scenarios[scenario], resolve=True)
    interventions = scenario_interventions(
        OmegaConf.to_container(cfg.interventions, resolve=True), edits, scenario, start
    )
    scenario_cfg = OmegaConf.merge(cfg, {"interventions": interventions, "model": {"interventions": interventions}})
    model = build_model(scenario_cfg, population_path)
    draws = spread_posterior_draws(posterior_path, settings.draws, model)
    count = len(next(iter(draws.values())))
    parameters = {name: torch.full((count,), value) for name, value in model.defaults.items()}
    parameters.update(
        {name: torch.as_tensor(values, dtype=torch.float32) for name, values in draws.items() if name in parameters}
    )
    # calibrated controls (a Calib-NN's daily transmission multiplier) stay as fitted: the scenarios edit the
    # interventions on top of them
    controls = {
        name: torch.as_tensor(values, dtype=torch.float32) for name, values in draws.items() if name in model.controls
    }
    with torch.no_grad():
        output = model.simulate(parameters, seed=cfg.seed, controls=controls)
    ds = model.to_dataset(output)
    ds = ds.drop_vars([name for name in ds.data_vars if name not in STORED])
    used = {dim for name in ds.data_vars for dim in ds[name].dims}
    ds = ds.drop_vars([name for name in ds.coords if name not in used])
    for name, values in parameters.items():
        ds[name] = ("draw", values.numpy())
    for name, values in controls.items():
        ds[name] = (("draw", *model.controls[name]), values.numpy())
    ds.attrs.update(scenario=scenario, edits=edits, posterior=str(posterior_path), controls=sorted(controls))
    log.info(
        "scenario %s: %d draws, median total infections %.0f",
        scenario,
        count,
        float(ds.new_infections.sum("time").median()),
    )
    return ds


def write_scenario(
    cfg: DictConfig,
    scenario: str,
    population_path: str | Path | None,
    posterior_path: str | Path,
    output_path: str | Path,
) -> Path:
    """Stage `counterfactual`: one scenario's store."""
    return write_dataset(simulate_scenario(cfg, scenario, population_path, posterior_path), output_path, cfg, cfg.seed)


def summary_table(ds: xr.Dataset) -> pd.DataFrame:
    """Per scenario and total (infections, hospitalisations, deaths): median and 95% interval over the draws, and
    of the difference to the baseline in the same draws."""
    rows = []
    baseline = ds.sel(scenario=BASELINE) if BASELINE in ds.scenario.values else None
    for scenario in ds.scenario.values:
        for name in (name for name in TOTALS if name in ds):
            total = ds[name].sel(scenario=scenario).sum("time").values
            row = {
                "scenario": scenario,
                "output": f"total {name}",
                "median": np.median(total),
                "q2.5": np.quantile(total, 0.025),
                "q97.5": np.quantile(total, 0.975),
            }
            if baseline is not None:
                difference = total - baseline[name].sum("time").values
                row.update(
                    {
                        "difference_median": np.median(difference),
                        "difference_q2.5": np.quantile(difference, 0.025),
                        "difference_q97.5": np.quantile(difference, 0.975),
                    }
                )
            rows.append(row)
    return pd.DataFrame(rows)


def merge_counterfactuals(
    cfg: DictConfig, scenario_paths: Sequence[str | Path], output_path: str | Path, table_path: str | Path
) -> Path:
    """Stage `merge_counterfactuals`: the scenarios stacked along `scenario` in `counterfactuals.zarr`, and the
    summary table (CSV)."""
    stores = [read_dataset(path) for path in scenario_paths]
    names = [store.attrs["scenario"] for store in stores]
    ds = xr.concat([store.drop_attrs() for store in stores], dim="scenario", data_vars="all")
    ds = ds.assign_coords(scenario=as_object_strings(names))
    ds.attrs["edits"] = {store.attrs["scenario"]: store.attrs.get("edits", []) for store in stores}
    ds.attrs.update(baseline=BASELINE, posterior=stores[0].attrs.get("posterior", ""))
    written = write_dataset(ds, output_path, cfg, cfg.seed)
    atomic_write_text(table_path, summary_table(ds).to_csv(index=False, float_format="%.6g"))
    return written
