"""The Snakemake DAG: the toy study runs end to end; the default study's DAG resolves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from diffabm.store import read_dataset

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--cores", "2"]


def test_toy_study_runs_end_to_end(tmp_path):
    target = "results/toy/figures/simulation.png"
    overrides = 'overrides=["population.n_agents=2000", "model.days=15", "model.draws=2"]'
    run = subprocess.run([*SNAKEMAKE, "--directory", str(tmp_path), target, "--config", "study=toy", overrides],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    simulation = read_dataset(tmp_path / "results/toy/simulation.zarr")
    assert simulation.sizes["draw"] == 2 and simulation.sizes["time"] == 15
    assert "study: toy" in simulation.attrs["config"]
    assert (tmp_path / target).stat().st_size > 0
    for rule, line in (("synthesize", "synthesised 2000 agents"), ("simulate", "simulated 2 draws of EpidemicModel"),
                       ("plot_simulation", "rule plot_simulation done")):
        assert line in (tmp_path / f"results/toy/logs/{rule}.log").read_text()


def test_a_failing_job_writes_its_error_to_its_log_and_leaves_no_output(tmp_path):
    """An intervention on a layer the population lacks composes, but the `simulate` job must stop with it."""
    overrides = ('overrides=["population.n_agents=500", "model.days=10", "model.draws=1", "+interventions=[{kind: '
                 'contact_multiplier, layers: [gym], start: 2, multiplier: 0}]"]')
    run = subprocess.run([*SNAKEMAKE, "--directory", str(tmp_path), "results/toy/simulation.zarr", "--config",
                          "study=toy", overrides], capture_output=True, text=True)
    assert run.returncode != 0
    message = "interventions[0].layers is ['gym']: unknown layers ['gym']"
    assert message in run.stderr
    log = (tmp_path / "results/toy/logs/simulate.log").read_text().strip().splitlines()
    assert message in log[-1] and log[-1].startswith("diffabm simulate: error:")
    assert not (tmp_path / "results/toy/simulation.zarr").exists()


def test_default_study_dag_resolves_with_census_inputs(tmp_path):
    (tmp_path / "data").symlink_to(ROOT / "data")
    run = subprocess.run([*SNAKEMAKE, "--directory", str(tmp_path), "-n", "results/default/simulation.zarr"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "synthesize" in run.stdout and "simulate" in run.stdout


def test_unknown_study_fails_before_running(tmp_path):
    run = subprocess.run([*SNAKEMAKE, "--directory", str(tmp_path), "-n", "--config", "study=nope"],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith("diffabm workflow: error: unknown study 'nope'")


def test_overrides_given_as_a_string_fail_before_running(tmp_path):
    run = subprocess.run([*SNAKEMAKE, "--directory", str(tmp_path), "-n", "--config", "study=toy",
                          "overrides=model.days=30"], capture_output=True, text=True)
    assert run.returncode == 2
    assert "must be a list of Hydra overrides" in run.stderr.strip().splitlines()[-1]
