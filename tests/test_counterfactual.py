"""Counterfactual scenarios (`diffabm.counterfactual`): edits of named interventions, the same posterior draws in
every scenario, and the direction of effects that must hold."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pytest
import xarray as xr
from omegaconf import OmegaConf

from diffabm.config import compose_study
from diffabm.counterfactual import merge_counterfactuals, scenario_interventions, write_scenario
from diffabm.population.toy import toy_population
from diffabm.store import read_dataset, write_dataset

START = dt.date(2021, 8, 17)
LOCKDOWN = [
    {
        "name": "lockdown",
        "kind": "contact_multiplier",
        "layers": ["school", "workplace"],
        "start": 5,
        "end": 25,
        "multiplier": 0.1,
    },
    {
        "name": "lockdown",
        "kind": "contact_multiplier",
        "layers": ["community"],
        "start": "2021-08-22",
        "multiplier": 0.3,
    },
    {"name": "isolation", "kind": "isolation", "compliance": 0.5, "delay_days": 1},
]
SCENARIOS = {
    "baseline": [],
    "lockdown_later": [{"name": "lockdown", "shift_start": 7}],
    "no_lockdown": [{"name": "lockdown", "drop": True}],
    "isolation_90": [{"name": "isolation", "set": {"compliance": 0.9}}],
    "no_vaccination": [{"name": "vaccination", "drop": True}],
}
EFFICACY = {
    "efficacy_infection_dose1": 0.4,
    "efficacy_infection_dose2": 0.7,
    "efficacy_severe_dose1": 0.5,
    "efficacy_severe_dose2": 0.8,
}


def test_edits_shift_drop_and_set_named_interventions():
    later = scenario_interventions(LOCKDOWN, SCENARIOS["lockdown_later"], "later", START)
    assert [spec["start"] for spec in later[:2]] == [12, "2021-08-29"] and later[0]["end"] == 25
    assert [spec["kind"] for spec in scenario_interventions(LOCKDOWN, SCENARIOS["no_lockdown"], "none", START)] == [
        "isolation"
    ]
    assert scenario_interventions(LOCKDOWN, SCENARIOS["isolation_90"], "iso", START)[2]["compliance"] == 0.9
    assert LOCKDOWN[0]["start"] == 5, "the study's own interventions are not changed"
    with pytest.raises(ValueError, match=r"counterfactual.scenarios.bad\[0\].name is 'curfew'"):
        scenario_interventions(LOCKDOWN, [{"name": "curfew", "drop": True}], "bad", START)


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory):
    """Every scenario of a 4,000-agent toy epidemic over 24 posterior draws, merged; 70% of agents had two doses
    (60% of them before day 0, the rest on day 10), and severe outcomes are made common."""
    root = tmp_path_factory.mktemp("counterfactual")
    doses = root / "doses.csv"
    doses.write_text("Date,First doses\n2021-06-01,60\n2021-08-27,40\n")
    interventions = [
        *LOCKDOWN,
        {"name": "vaccination", "kind": "vaccination", "doses": str(doses), "interval_days": 21},
    ]
    cfg = compose_study(
        "toy",
        [
            "model.days=40",
            "model.parameters.initial_fraction=0.01",
            "model.parameters.hospitalisation_odds_ratio=10",
            "model.parameters.fatality_odds_ratio=5",
        ],
    )
    OmegaConf.set_struct(cfg, False)
    cfg = OmegaConf.merge(
        cfg,
        {
            "interventions": interventions,
            "start_date": START.isoformat(),
            "model": {"interventions": interventions, "start_date": START.isoformat(), "parameters": EFFICACY},
            "counterfactual": {"posterior": "flow", "draws": 24, "scenarios": SCENARIOS},
        },
    )
    toy = toy_population(4_000, seed=5)
    uptake = np.full(toy.n_agents, 0.7, dtype=np.float32)
    toy = dataclasses.replace(toy, extra={**toy.extra, "vaccine_dose1_uptake": uptake, "vaccine_dose2_uptake": uptake})
    population = write_dataset(toy.to_dataset(), root / "population.zarr", None, 0)
    rng = np.random.default_rng(0)
    posterior = write_dataset(
        xr.Dataset(
            {"beta_household": ("draw", rng.uniform(2, 4, 24)), "beta_community": ("draw", rng.uniform(1, 3, 24))}
        ),
        root / "posterior.zarr",
        None,
        0,
    )
    paths = [write_scenario(cfg, name, population, posterior, root / f"{name}.zarr") for name in SCENARIOS]
    merge_counterfactuals(cfg, paths, root / "counterfactuals.zarr", root / "counterfactuals.csv")
    return read_dataset(root / "counterfactuals.zarr"), root


def test_scenarios_share_the_posterior_draws_and_are_stored_side_by_side(scenarios):
    ds, root = scenarios
    assert list(ds.scenario.values) == list(SCENARIOS)
    assert ds.new_infections.dims == ("scenario", "draw", "time")
    assert ds.infections_by_age.dims == ("scenario", "draw", "time", "age_group")
    assert set(ds.dims) == {"scenario", "draw", "time", "age_group", "region"}, "no coordinates of unstored series"
    for name in ("beta_household", "beta_community"):
        assert (ds[name] == ds[name].isel(scenario=0)).all(), "every scenario runs the same draws"
    import pandas as pd

    table = pd.read_csv(root / "counterfactuals.csv")
    baseline = table[table.scenario == "baseline"]
    assert (baseline[["difference_median", "difference_q2.5", "difference_q97.5"]] == 0).all().all()


@pytest.mark.parametrize("scenario", ["lockdown_later", "no_lockdown"])
def test_a_later_or_absent_lockdown_never_gives_fewer_expected_infections(scenarios, scenario):
    """In the same 24 draws and seed: the mean paired difference in total infections is positive by more than
    2 standard errors (a lockdown that did nothing, or acted the wrong way, fails)."""
    ds, _ = scenarios
    totals = ds.new_infections.sum("time")
    difference = (totals.sel(scenario=scenario) - totals.sel(scenario="baseline")).values
    standard_error = difference.std(ddof=1) / np.sqrt(difference.size)
    assert difference.mean() > 2 * standard_error, (difference.mean(), standard_error)


def test_more_isolation_never_gives_more_expected_infections(scenarios):
    ds, _ = scenarios
    totals = ds.new_infections.sum("time")
    difference = (totals.sel(scenario="isolation_90") - totals.sel(scenario="baseline")).values
    assert difference.mean() < 2 * difference.std(ddof=1) / np.sqrt(difference.size)


def test_no_vaccination_never_gives_fewer_expected_deaths(scenarios):
    """In the same 24 draws and seed: without vaccination, more infections and more deaths than the baseline,
    the mean paired difference above 2 standard errors (a vaccine that did nothing fails)."""
    ds, _ = scenarios
    for series in ("new_infections", "deaths"):
        totals = ds[series].sum("time")
        difference = (totals.sel(scenario="no_vaccination") - totals.sel(scenario="baseline")).values
        assert difference.mean() > 2 * difference.std(ddof=1) / np.sqrt(difference.size), (series, difference)


def test_scenarios_keep_the_calibrated_controls_of_the_posterior(tmp_path):
    """A Calib-NN posterior stores a daily transmission multiplier per draw: every scenario simulates with it (as
    fitted), and stores it. A multiplier of one changes nothing; a multiplier of zero stops transmission after
    the seeds (before, the counterfactuals dropped it and both ran as without it)."""
    cfg = compose_study("toy", ["model.days=20", "model.parameters.initial_fraction=0.01", "interventions=[]"])
    OmegaConf.set_struct(cfg, False)
    cfg = OmegaConf.merge(cfg, {"counterfactual": {"posterior": "calibnn", "draws": 4, "scenarios": {"baseline": []}}})
    population = write_dataset(toy_population(2_000, seed=3).to_dataset(), tmp_path / "population.zarr", None, 0)
    betas = {"beta_household": ("draw", np.full(4, 3.0)), "beta_community": ("draw", np.full(4, 2.0))}
    totals = {}
    for name, multiplier in (("none", None), ("one", 1.0), ("zero", 0.0)):
        controls = (
            {} if multiplier is None else {"transmission_multiplier": (("draw", "time"), np.full((4, 20), multiplier))}
        )
        posterior = write_dataset(xr.Dataset({**betas, **controls}), tmp_path / f"{name}.zarr", None, 0)
        scenario = read_dataset(write_scenario(cfg, "baseline", population, posterior, tmp_path / f"{name}-out.zarr"))
        assert ("transmission_multiplier" in scenario) == (multiplier is not None)
        totals[name] = scenario.new_infections.isel(time=slice(1, None)).sum("time").values
    assert (totals["none"] > 0).all()
    np.testing.assert_array_equal(totals["one"], totals["none"])
    assert (totals["zero"] == 0).all()
