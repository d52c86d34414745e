"""The Snakemake DAG: the toy study runs end to end; the default study's DAG resolves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from diffabm.store import read_dataset

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--cores", "2"]


def test_toy_study_runs_end_to_end(tmp_path):
    target = "results/toy/figures/epidemic_curve.png"
    overrides = 'overrides=["population.n_agents=2000", "model.days=15", "model.draws=2"]'
    run = subprocess.run([*SNAKEMAKE, "--directory", str(tmp_path), target, "--config", "study=toy", overrides],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    simulation = read_dataset(tmp_path / "results/toy/simulation.zarr")
    assert simulation.sizes["draw"] == 2 and simulation.sizes["time"] == 15
    assert "study: toy" in simulation.attrs["config"]
    assert (tmp_path / target).stat().st_size > 0
    assert (tmp_path / "results/toy/logs/simulate.log").exists()


def test_default_study_dag_resolves_with_census_inputs(tmp_path):
    (tmp_path / "data").symlink_to(ROOT / "data")
    run = subprocess.run([*SNAKEMAKE, "--directory", str(tmp_path), "-n", "results/default/simulation.zarr"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "synthesize" in run.stdout and "simulate" in run.stdout


def test_unknown_study_fails_before_running(tmp_path):
    run = subprocess.run([*SNAKEMAKE, "--directory", str(tmp_path), "-n", "--config", "study=nope"],
                         capture_output=True, text=True)
    assert run.returncode != 0
    assert "unknown study 'nope'" in run.stdout + run.stderr
