"""The Snakemake DAG: the toy study runs end to end; the default study's DAG resolves. A calibration inside a job:
Lightning neither warns about `srun` nor requeues itself on SLURM, a job resumes its checkpoint only in a retry
(`snakemake -f` refits), and its log gets plain lines, no progress bar."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from diffabm.config import compose_study
from diffabm.store import read_dataset

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--cores", "2"]
# The Brock & Hommes study (no population) on a tiny budget: a calibration in seconds.
BH = "bh-gradient-horizon"
BH_TINY = ["model.steps=10", "model.draws=2", "calibration.point.epochs=2", "calibration.point.draws_per_step=2",
           "calibration.flow.epochs=2", "calibration.flow.transforms=1", "calibration.flow.hidden_features=[4]",
           "calibration.flow.draws_per_step=2", "calibration.flow.posterior_draws=4", "calibration.fit_draws=2",
           "calibration.loggers=[csv]"]


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


@pytest.fixture(scope="module")
def bh_observed(tmp_path_factory) -> Path:
    from diffabm.calibration.observe import observe

    return observe(compose_study(BH, BH_TINY), None, tmp_path_factory.mktemp("bh") / "observed.zarr")


def fake_srun(tmp_path: Path, monkeypatch) -> None:
    """An `srun` executable first on the PATH, as on a SLURM cluster's nodes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.parametrize("inside_a_job", [False, True], ids=["srun-on-path", "inside-a-slurm-job"])
def test_lightning_neither_warns_about_srun_nor_takes_over_a_slurm_job(bh_observed, tmp_path, monkeypatch,
                                                                         inside_a_job):
    """With `srun` on the PATH Lightning 2.6 warns (an error under the test suite's filterwarnings), and inside a
    SLURM job it would pick its SLURM environment, with its own auto-requeue on SIGUSR1: the Trainer runs in
    Lightning's plain environment instead, resuming being Snakemake's retries' business."""
    from lightning.fabric.plugins.environments import LightningEnvironment

    from diffabm.calibration import training
    from diffabm.calibration.stage import calibrate

    fake_srun(tmp_path, monkeypatch)
    if inside_a_job:  # what a Snakemake job submitted with sbatch sees
        for name, value in {"SLURM_JOB_ID": "42", "SLURM_JOB_NAME": "snakejob.calibrate", "SLURM_NTASKS": "1",
                            "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}.items():
            monkeypatch.setenv(name, value)
    trainers = []
    build_trainer = training.build_trainer
    monkeypatch.setattr(training, "build_trainer", lambda *a, **k: trainers.append(build_trainer(*a, **k)) or
                        trainers[-1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        calibrate(compose_study(BH, BH_TINY), "point", None, bh_observed, tmp_path / "run")
    assert not [str(warning.message) for warning in caught if "srun" in str(warning.message)]
    (trainer,) = trainers
    environment = trainer._accelerator_connector.cluster_environment
    assert type(environment) is LightningEnvironment
    assert (tmp_path / "run" / "posterior.zarr").exists()


def epochs_run(monkeypatch, run) -> int:
    """The number of training epochs `run()` went through."""
    from diffabm.calibration.point import PointCalibration

    epochs = []
    with monkeypatch.context() as patch:
        patch.setattr(PointCalibration, "on_train_epoch_start", lambda module: epochs.append(module.current_epoch),
                      raising=False)
        run()
    return len(epochs)


def test_only_a_retry_resumes_a_calibration_and_a_fresh_run_deletes_the_checkpoint(bh_observed, tmp_path,
                                                                                    monkeypatch):
    from diffabm.calibration.stage import calibrate

    cfg = compose_study(BH, BH_TINY)
    run_dir = tmp_path / "run"
    assert epochs_run(monkeypatch, lambda: calibrate(cfg, "point", None, bh_observed, run_dir)) == 2
    first = read_dataset(run_dir / "posterior.zarr")
    # A retry of the finished run restores its last checkpoint: no epoch left to run, the same result.
    assert epochs_run(monkeypatch, lambda: calibrate(cfg, "point", None, bh_observed, run_dir, resume=True)) == 0
    assert read_dataset(run_dir / "posterior.zarr").equals(first)
    # A fresh run (`snakemake -f`, attempt 1) fits again from scratch, to the same result (seeded).
    stale = run_dir / "checkpoints" / "stale.ckpt"
    stale.write_bytes(b"from another run")
    assert epochs_run(monkeypatch, lambda: calibrate(cfg, "point", None, bh_observed, run_dir)) == 2
    assert not stale.exists() and (run_dir / "checkpoints" / "last.ckpt").exists()
    assert read_dataset(run_dir / "posterior.zarr").equals(first)


def test_a_forced_calibration_job_refits_and_only_a_retry_resumes(tmp_path):
    """`snakemake -f` on a calibration fits afresh; the rule's attempt (here set to 2, as Snakemake's `retries`
    do) resumes its checkpoint. The job's log reads line by line: one line per epoch, no carriage returns."""
    target = "results/bh-gradient-horizon/calibration/flow_H0/metrics.csv"
    log = tmp_path / "results/bh-gradient-horizon/logs/calibrate_flow_H0.log"
    overrides = "overrides=[" + ", ".join(f'"{override}"' for override in BH_TINY) + "]"
    command = [*SNAKEMAKE, "--directory", str(tmp_path), target, "--config", f"study={BH}", overrides]

    def run(*extra: str) -> str:
        job = subprocess.run([*command, *extra], capture_output=True, text=True)
        assert job.returncode == 0, job.stderr[-3000:]
        return log.read_text()

    first = run()
    assert "resuming" not in first and "epoch 2/2 (step 2): " in first and "\r" not in first
    forced = run("-f")
    assert "starting afresh (not a retry)" in forced and "epoch 1/2" in forced and "resuming" not in forced
    retried = run("-f", "--set-resources", "calibrate_variant:attempt=2")
    assert "resuming from" in retried and "epoch 1/2" not in retried


def test_the_slurm_profile_names_no_cluster_and_polls_squeue(tmp_path):
    """profiles/slurm: account and partition from the environment (none hard-coded), `squeue` for job status
    (clusters without accounting); its resources evaluate in a dry run."""
    import yaml

    profile = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    assert profile["executor"] == "slurm" and profile["slurm-status-command"] == "squeue"
    env = {**os.environ, "DIFFABM_SLURM_ACCOUNT": "myproject", "DIFFABM_SLURM_PARTITION": "short"}
    run = subprocess.run([*SNAKEMAKE, "--workflow-profile", str(ROOT / "profiles/slurm"), "--directory", str(tmp_path),
                          "-n", "results/toy/population.zarr", "--config", "study=toy"], capture_output=True,
                         text=True, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "slurm_account=myproject, slurm_partition=short, runtime=60" in run.stdout + run.stderr
