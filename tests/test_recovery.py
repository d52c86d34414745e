"""The recovery table flags truths inside or outside the 90% interval and compares losses."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from diffabm.calibration.summary import recovery_table
from diffabm.store import write_dataset


def test_recovery_table_flags_truth_and_loss_ratio(tmp_path):
    draws = np.random.default_rng(0).normal(1.0, 0.1, size=1000)
    posterior = xr.Dataset(
        {
            "beta_school": ("draw", draws),
            "beta_household": ("draw", draws + 5),
            "transmission_multiplier": (("draw", "time"), np.ones((1000, 3))),
        }
    )
    posterior.attrs["truth"] = {"beta_school": 1.0, "beta_household": 1.0}
    fit = xr.Dataset({"loss": ("draw", np.full(4, 3.0)), "truth_loss": ("draw", np.full(4, 2.0))})
    write_dataset(posterior, tmp_path / "posterior.zarr", None, seed=0)
    write_dataset(fit, tmp_path / "fit.zarr", None, seed=0)
    table = recovery_table({"flow": (tmp_path / "posterior.zarr", tmp_path / "fit.zarr")}).set_index("parameter")
    assert sorted(table.index) == ["beta_household", "beta_school"], "a daily series is not a parameter"
    assert table.loc["beta_school", "inside_90"] and not table.loc["beta_household", "inside_90"]
    assert table.loc["beta_household", "relative_error"] == pytest.approx(5.0, rel=0.02)
    assert table.loc["beta_school", "loss_ratio"] == pytest.approx(1.5)
