"""Figures (`diffabm.figures`) on small synthetic stores: every PNG carries the store's provenance in its text
chunks and has a PDF beside it; the intervention periods are shaded one span per name; bands are the 5% and 95%
quantiles over draws; a point estimate gets a table, not a corner plot."""

from __future__ import annotations

import hashlib

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from omegaconf import OmegaConf
from PIL import Image

import diffabm
from diffabm.figures import calibration as calibration_figure
from diffabm.figures.counterfactual import plot_counterfactuals
from diffabm.figures.simulation import plot_simulation
from diffabm.figures.style import (
    BAND,
    intervention_spans,
    phases,
    plot_band,
    quantile_band,
    shade_interventions,
)
from diffabm.store import read_dataset, write_dataset

DAYS, DRAWS, SEED = 40, 6, 11
TIME = np.datetime64("2021-08-10", "ns") + np.arange(DAYS) * np.timedelta64(1, "D")
INTERVENTIONS = [
    {
        "name": "alert_level_4",
        "kind": "contact_multiplier",
        "layers": ["school"],
        "start": "2021-08-18",
        "end": "2021-09-01",
        "multiplier": 0.05,
    },
    {
        "name": "alert_level_4",
        "kind": "contact_multiplier",
        "layers": ["workplace"],
        "start": "2021-08-18",
        "end": "2021-09-01",
        "multiplier": 0.3,
    },
    {
        "name": "alert_level_3",
        "kind": "contact_multiplier",
        "layers": ["school"],
        "start": "2021-09-01",
        "end": "2021-09-10",
        "multiplier": 0.1,
    },
    {
        "name": "alert_level_3",
        "kind": "contact_multiplier",
        "layers": ["workplace"],
        "start": "2021-09-01",
        "end": "2021-09-15",
        "multiplier": 0.5,
    },
    {"name": "step_1", "kind": "contact_multiplier", "layers": ["community"], "start": 27, "multiplier": 0.6},
    {"kind": "contact_multiplier", "layers": ["school"], "start": 2, "end": 5, "multiplier": 0.0},
    {"name": "isolation", "kind": "isolation", "compliance": 0.5, "delay_days": 1},
]
CONFIG = {
    "study": "figures-test",
    "seed": SEED,
    "start_date": "2021-08-10",
    "interventions": INTERVENTIONS,
    "model": {"days": DAYS, "start_date": "2021-08-10", "interventions": INTERVENTIONS},
}


def _epidemic(rng, *leading: int) -> np.ndarray:
    """Daily counts that rise and fall, with noise, of shape (*leading, DAYS)."""
    curve = 50 * np.exp(-0.5 * ((np.arange(DAYS) - 20) / 7) ** 2)
    return rng.poisson(curve * rng.uniform(0.7, 1.3, (*leading, 1))).astype(np.float32)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("figures")
    rng = np.random.default_rng(0)
    simulation = xr.Dataset(
        {
            "new_infections": (("draw", "time"), _epidemic(rng, DRAWS)),
            "infections_by_setting": (("draw", "time", "setting"), _epidemic(rng, DRAWS, 3).transpose(0, 2, 1)),
            "beta_household": ("draw", np.full(DRAWS, 3.0, dtype=np.float32)),
        },
        coords={"time": TIME, "draw": np.arange(DRAWS), "setting": ["household", "school", "community"]},
    )
    scenarios = ["baseline", "no_lockdown"]
    counterfactuals = xr.Dataset(
        {
            name: (("scenario", "draw", "time"), _epidemic(rng, 2, DRAWS))
            for name in ("new_infections", "reported_cases", "deaths")
        },
        coords={"time": TIME, "draw": np.arange(DRAWS), "scenario": np.asarray(scenarios, dtype=object)},
        attrs={"baseline": "baseline", "posterior": "flow"},
    )
    observed = xr.Dataset({"reported_cases": ("time", _epidemic(rng, 1)[0])}, coords={"time": TIME})
    return {
        "simulation": write_dataset(simulation, root / "simulation.zarr", CONFIG, SEED),
        "counterfactuals": write_dataset(counterfactuals, root / "counterfactuals.zarr", CONFIG, SEED),
        "observed": write_dataset(observed, root / "observed.zarr", CONFIG, SEED),
    }


def _assert_provenance_and_pdf(png, store) -> None:
    ds = read_dataset(store)
    with Image.open(png) as image:
        text = image.text
    assert text["study"] == "figures-test" and text["seed"] == str(SEED)
    assert text["config"] == ds.attrs["config"]
    assert text["config_sha256"] == hashlib.sha256(ds.attrs["config"].encode()).hexdigest()
    assert text["git_commit"] == ds.attrs["git_commit"] and text["diffabm_version"] == diffabm.__version__
    assert text["Source"] == str(store)
    pdf = png.with_suffix(".pdf")
    assert pdf.read_bytes().startswith(b"%PDF") and b"study=figures-test" in pdf.read_bytes()


def test_simulation_figure_carries_provenance_and_a_pdf(stores, tmp_path):
    png = plot_simulation(stores["simulation"], tmp_path / "simulation.png")
    _assert_provenance_and_pdf(png, stores["simulation"])


def test_counterfactual_figure_carries_provenance_and_a_pdf(stores, tmp_path):
    png = plot_counterfactuals(stores["counterfactuals"], tmp_path / "counterfactuals.png", stores["observed"])
    _assert_provenance_and_pdf(png, stores["counterfactuals"])


def test_one_span_per_named_intervention_period():
    spans = intervention_spans(CONFIG)
    day = np.timedelta64(1, "D")
    start = np.datetime64("2021-08-10", "D")
    assert [(span.name, span.start, span.end) for span in spans] == [
        ("school contacts ×0", start + 2 * day, start + 5 * day),  # unnamed: named by layer and value
        ("alert_level_4", np.datetime64("2021-08-18"), np.datetime64("2021-09-01")),  # two layers, one period
        ("alert_level_3", np.datetime64("2021-09-01"), np.datetime64("2021-09-15")),  # overlapping, merged
        ("step_1", start + 27 * day, start + DAYS * day),  # open end: the last day's end
    ]
    assert spans[1].detail == "school ×0.05, workplace ×0.3"
    # two separate periods of one name stay two spans; day numbers without a start date stay day numbers
    apart = [
        {"name": "lockdown", "kind": "contact_multiplier", "start": 1, "end": 3, "multiplier": 0.5},
        {"name": "lockdown", "kind": "contact_multiplier", "start": 6, "end": 9, "multiplier": 0.5},
    ]
    assert [(s.start, s.end) for s in intervention_spans({"model": {"days": 10, "interventions": apart}})] == [
        (1, 3),
        (6, 9),
    ]
    assert intervention_spans({"model": {"days": 10}}) == []


def test_overlapping_periods_are_shaded_by_the_latest_and_legended_once_per_name():
    spans = intervention_spans(CONFIG)
    pieces = phases(spans)
    assert [piece.name for piece in pieces] == ["school contacts ×0", "alert_level_4", "alert_level_3", "step_1"]
    assert pieces[2].end == spans[3].start  # alert level 3 gives way to step 1 where it began
    fig, ax = plt.subplots()
    handles = shade_interventions(ax, spans)
    assert list(handles) == [span.name for span in spans] and len(ax.patches) == len(pieces)
    plt.close(fig)


def test_bands_are_the_5_and_95_percent_quantiles():
    assert BAND == (0.05, 0.95)
    draws = np.tile(np.arange(101.0)[:, None], (1, 4))  # 101 draws 0..100 at each of 4 times
    low, median, high = quantile_band(draws)
    np.testing.assert_allclose(low, 5.0) and np.testing.assert_allclose(median, 50.0)
    np.testing.assert_allclose(high, 95.0)
    fig, ax = plt.subplots()
    line, band = plot_band(ax, np.arange(4), xr.DataArray(draws.T, dims=("time", "draw")))
    np.testing.assert_allclose(line.get_ydata(), 50.0)
    vertices = band.get_paths()[0].vertices[:, 1]
    assert vertices.min() == pytest.approx(5.0) and vertices.max() == pytest.approx(95.0)
    plt.close(fig)


def test_a_point_estimate_gets_a_table_and_markers_not_a_corner_plot(stores, tmp_path, monkeypatch):
    names = ["beta_household", "initial_fraction"]
    truth = {"beta_household": 2.0, "initial_fraction": 0.003}
    posterior = write_dataset(
        xr.Dataset(
            {"beta_household": ("draw", [2.4]), "initial_fraction": ("draw", [0.002])},
            attrs={"mode": "point", "truth": truth},
        ),
        tmp_path / "posterior.zarr",
        CONFIG,
        SEED,
    )
    rng = np.random.default_rng(1)
    fit = write_dataset(
        xr.Dataset(
            {
                "new_infections": (("draw", "time"), _epidemic(rng, 20)),
                "observed_new_infections": ("time", _epidemic(rng, 1)[0]),
            },
            coords={"time": TIME, "draw": np.arange(20)},
            attrs={"observables": ["new_infections"], "loss": "log_mse"},
        ),
        tmp_path / "fit.zarr",
        CONFIG,
        SEED,
    )
    pd.DataFrame({"epoch": [0, 1, 2], "loss_epoch": [9.0, 5.0, 4.0]}).to_csv(tmp_path / "metrics.csv", index=False)
    cfg = OmegaConf.create(
        {
            "study": "figures-test",
            "calibration": {
                "holdout_days": 7,
                "prior": {
                    "beta_household": {"distribution": "LogNormal", "loc": 0.5, "scale": 1.0},
                    "initial_fraction": {"distribution": "Beta", "concentration1": 1.0, "concentration0": 100.0},
                },
            },
        }
    )
    figures = []
    saved = calibration_figure.save_figure
    monkeypatch.setattr(
        calibration_figure,
        "save_figure",
        lambda fig, *args, **kwargs: figures.append(fig) or saved(fig, *args, **kwargs),
    )
    png = calibration_figure.plot_calibration(cfg, posterior, fit, tmp_path / "metrics.csv", tmp_path / "point.png")
    axes = figures[0].findobj(matplotlib.axes.Axes)
    assert sum(len(ax.tables) for ax in axes) == 1
    table = next(ax.tables[0] for ax in axes if ax.tables)
    cells = {cell.get_text().get_text() for cell in table.get_celld().values()}
    assert {"beta_household", "2.4", "2", "initial_fraction", "0.002", "0.003"} <= cells
    assert not any(
        isinstance(patch, matplotlib.patches.Rectangle) and ax.get_xlabel() in names
        for ax in axes
        for patch in ax.patches
    ), "no histogram of a single draw"
    observed_lines = [line for ax in axes for line in ax.get_lines() if line.get_label() == "observed"]
    assert len(observed_lines) == 1, "the observed data beside the posterior predictive"
    with Image.open(png) as image:
        assert image.text["seed"] == str(SEED)
    assert png.with_suffix(".pdf").exists()
