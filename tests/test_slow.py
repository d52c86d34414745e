"""Long checks (`make test-all`, or `pytest -m slow`): the default study end to end through Snakemake."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_default_study_runs_end_to_end(tmp_path):
    """`make run`'s DAG: census synthesis, simulation, observation, point and flow calibration, figures; every job
    leaves a log that ends with its rule done."""
    (tmp_path / "data").symlink_to(ROOT / "data")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(ROOT / "Snakefile"),
            "--cores",
            "2",
            "--directory",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = tmp_path / "results" / "default"
    for name in (
        "population.zarr",
        "simulation.zarr",
        "observed.zarr",
        "calibration/point/posterior.zarr",
        "calibration/flow/posterior.zarr",
        "calibration/recovery.csv",
        "figures/calibration_flow.png",
    ):
        assert (results / name).exists(), name
    for log in (results / "logs").glob("*.log"):
        assert "done" in log.read_text().strip().splitlines()[-1] or "wandb" in log.read_text(), log
