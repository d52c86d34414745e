"""Real records and the observation model: the Ministry of Health's reported cases, the case-reporting model,
and forecast scores (`diffabm.calibration.records`, `diffabm.models.epidemic.reporting`,
`diffabm.calibration.forecast`)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_model

from diffabm.calibration.forecast import weighted_interval_score
from diffabm.calibration.records import nz_reported_cases
from diffabm.models.epidemic.reporting import delay_weights, reported_cases

CASES = Path(__file__).resolve().parents[1] / "data" / "nz" / "epi" / "cases_daily_by_location.csv"
AUCKLAND = ["Auckland", "Counties Manukau", "Waitemata"]


def test_the_auckland_delta_record_is_read_as_published():
    """The three DHBs' daily cases from 2021-08-17 for 107 days: 8,033 cases, 5 on the first day (the record)."""
    cases = nz_reported_cases(CASES, AUCKLAND, dt.date(2021, 8, 17), 107)
    assert cases.shape == (107, 3) and cases.sum() == 8033 and cases[0].sum() == 5
    assert (cases.sum(0) > 0).all()  # every DHB reported cases in the outbreak


def _text_count(table: pd.DataFrame) -> pd.DataFrame:
    changed = table.assign(cases=table.cases.astype(object))
    changed.loc[changed.index[changed.date == "2021-08-18"][0], "cases"] = "x"
    return changed


@pytest.mark.parametrize(
    "locations, change, expected",
    [
        (["Atlantis"], lambda df: df, ("'location'", "'Atlantis'")),
        (AUCKLAND, _text_count, ("'cases'", "'x'")),
        (AUCKLAND, lambda df: df.assign(cases=df.cases.where(df.date != "2021-08-19", -3)), ("'cases'", "-3")),
        (AUCKLAND, lambda df: df[df.date != "2021-08-20"], ("'date'", "2021-08-20")),
    ],
)
def test_a_bad_record_names_the_file_field_and_value(tmp_path, locations, change, expected):
    table = pd.read_csv(CASES)
    path = tmp_path / "cases.csv"
    change(table[table.location.isin(AUCKLAND)].reset_index(drop=True)).to_csv(path, index=False)
    with pytest.raises(ValueError) as error:
        nz_reported_cases(path, locations, dt.date(2021, 8, 17), 10)
    assert str(path) in str(error.value) and all(part in str(error.value) for part in expected), str(error.value)


def test_reporting_delays_and_scales_the_cases():
    """The delay weights sum to 1 with the discretised gamma's mean; a single day of cases is spread over the
    following days, scaled by the ascertainment and the people per agent; gradients reach both parameters."""
    mean = torch.tensor([2.0, 6.0], requires_grad=True)
    weights = delay_weights(mean)
    assert torch.allclose(weights.sum(-1), torch.ones(2))
    discretised_mean = (weights * torch.arange(weights.shape[-1])).sum(-1).detach().numpy()
    assert discretised_mean == pytest.approx([1.5, 5.5], abs=0.2)  # mean − 1/2, less the tail beyond 21 days
    cases = torch.zeros(2, 30)
    cases[:, 3] = 10.0
    ascertainment = torch.tensor([0.5, 0.5], requires_grad=True)
    reported = reported_cases(cases, ascertainment, mean, people_per_agent=20.0)
    assert reported[:, :3].sum() == 0 and torch.allclose(reported.sum(-1), torch.full((2,), 100.0), rtol=1e-3)
    assert reported[0].argmax() < reported[1].argmax()
    gradients = torch.autograd.grad(reported[:, 5].sum(), [ascertainment, mean])
    assert all((g != 0).all() for g in gradients)


def test_the_delay_weights_differentiate_in_reverse_and_forward_mode():
    """The gamma CDF's derivative in the mean delay, checked against finite differences (float64) in both modes:
    forward mode (sensitivity's `forward_mode`) fails with torch's own `gammainc`."""
    mean = torch.tensor([2.0, 6.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(delay_weights, (mean,))
    assert torch.autograd.gradcheck(
        delay_weights, (mean,), check_forward_ad=True, check_backward_ad=False, check_undefined_grad=False
    )


def test_the_model_reports_cases_when_its_parameters_say_so(small_population):
    plain = make_model(small_population)
    assert "reported_cases" not in plain.observables and "ascertainment" not in plain.space.names
    model = make_model(small_population, "+model.parameters.ascertainment=0.5", "+model.parameters.reporting_delay=2.0")
    out = model(seed=1)
    expected = reported_cases(out.cases, torch.full((3,), 0.5), torch.full((3,), 2.0), 1.0)
    torch.testing.assert_close(out.reported_cases, expected)
    with pytest.raises(ValueError, match="case reporting needs"):
        make_model(small_population, "+model.parameters.ascertainment=0.5")


def test_the_weighted_interval_score_is_zero_only_for_a_sharp_correct_forecast():
    """A point forecast at the observation scores 0; widening or missing costs; WIS of a point forecast is the
    absolute error (Bracher et al. 2021)."""
    assert weighted_interval_score(10.0, lambda p: 10.0) == 0.0
    assert weighted_interval_score(10.0, lambda p: 13.0) == pytest.approx(3.0)
    rng = np.random.default_rng(0)
    draws = rng.normal(10.0, 2.0, 20_000)
    sharp = weighted_interval_score(10.0, lambda p: float(np.quantile(draws, p)))
    wide = weighted_interval_score(10.0, lambda p: float(np.quantile(3 * draws - 20, p)))
    assert 0 < sharp < wide


def test_forecast_weeks_end_on_the_last_day_and_series_by_group_are_scored_per_group_and_summed(tmp_path):
    """16 days, 7 held out: weeks are days 2-8 and 9-15, the second held out exactly; a series by district gives
    rows per district and for their sum."""
    import xarray as xr

    from diffabm.calibration.forecast import forecast_scores
    from diffabm.store import write_dataset

    days, draws = 16, 50
    time = np.datetime64("2021-08-10", "ns") + np.arange(days) * np.timedelta64(1, "D")
    rng = np.random.default_rng(0)
    observed = np.stack([np.full(days, 1.0), np.full(days, 3.0)], axis=-1)
    samples = rng.poisson(observed, size=(draws, days, 2)).astype(float)
    fit = xr.Dataset(
        {
            "cases_by_district": (("draw", "time", "district"), samples),
            "observed_cases_by_district": (("time", "district"), observed),
        },
        coords={"time": time, "district": np.array(["Auckland", "Waitemata"], dtype=object)},
    )
    fit.attrs["observables"] = ["cases_by_district"]
    table = forecast_scores(write_dataset(fit, tmp_path / "fit.zarr", None, 0), holdout_days=7)
    assert list(table.week_start.unique()) == ["2021-08-12", "2021-08-19"]
    assert list(table.group.unique()) == ["all", "Auckland", "Waitemata"]
    assert list(table.period[table.group == "all"]) == ["fit", "holdout"]
    assert table.set_index("group").loc["all", "observed"].tolist() == [28.0, 28.0]
    assert table.set_index("group").loc["Waitemata", "observed"].tolist() == [21.0, 21.0]
