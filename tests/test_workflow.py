"""The Snakemake DAG: the toy study runs end to end; the default study's DAG resolves. A calibration inside a job:
Lightning neither warns about `srun` nor requeues itself on SLURM, a job resumes its checkpoint only in a retry
(`snakemake -f` refits), and its log gets plain lines, no progress bar."""

from __future__ import annotations

import os
import re
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
BH_TINY = [
    "model.steps=10",
    "model.draws=2",
    "calibration.point.epochs=2",
    "calibration.point.draws_per_step=2",
    "calibration.flow.epochs=2",
    "calibration.flow.transforms=1",
    "calibration.flow.hidden_features=[4]",
    "calibration.flow.draws_per_step=2",
    "calibration.flow.posterior_draws=4",
    "calibration.fit_draws=2",
    "calibration.loggers=[csv]",
]


def test_toy_study_runs_end_to_end(tmp_path):
    target = "results/toy/figures/simulation.png"
    overrides = 'overrides=["population.n_agents=2000", "model.days=15", "model.draws=2"]'
    run = subprocess.run(
        [*SNAKEMAKE, "--directory", str(tmp_path), target, "--config", "study=toy", overrides],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    simulation = read_dataset(tmp_path / "results/toy/simulation.zarr")
    assert simulation.sizes["draw"] == 2 and simulation.sizes["time"] == 15
    assert "study: toy" in simulation.attrs["config"]
    assert (tmp_path / target).stat().st_size > 0
    for rule, line in (
        ("synthesize", "synthesised 2000 agents"),
        ("simulate", "simulated 2 draws of EpidemicModel"),
        ("plot_simulation", "rule plot_simulation done"),
    ):
        assert line in (tmp_path / f"results/toy/logs/{rule}.log").read_text()


def test_a_failing_job_writes_its_error_to_its_log_and_leaves_no_output(tmp_path):
    """An intervention on a layer the population lacks composes, but the `simulate` job must stop with it."""
    overrides = (
        'overrides=["population.n_agents=500", "model.days=10", "model.draws=1", "+interventions=[{kind: '
        'contact_multiplier, layers: [gym], start: 2, multiplier: 0}]"]'
    )
    run = subprocess.run(
        [*SNAKEMAKE, "--directory", str(tmp_path), "results/toy/simulation.zarr", "--config", "study=toy", overrides],
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0
    message = "interventions[0].layers is ['gym']: unknown layers ['gym']"
    assert message in run.stderr
    log = (tmp_path / "results/toy/logs/simulate.log").read_text().strip().splitlines()
    assert message in log[-1] and log[-1].startswith("diffabm simulate: error:")
    assert not (tmp_path / "results/toy/simulation.zarr").exists()


def test_default_study_dag_resolves_with_census_inputs(tmp_path):
    (tmp_path / "data").symlink_to(ROOT / "data")
    run = subprocess.run(
        [*SNAKEMAKE, "--directory", str(tmp_path), "-n", "results/default/simulation.zarr"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "synthesize" in run.stdout and "simulate" in run.stdout


@pytest.mark.parametrize("study", sorted(path.stem for path in (ROOT / "conf" / "experiment").glob("*.yaml")))
def test_every_study_dag_resolves(tmp_path, study):
    """A dry run of each study's whole DAG (rule all): its config composes, its input functions and resources
    evaluate, and it plans a job of every rule it needs."""
    (tmp_path / "data").symlink_to(ROOT / "data")
    run = subprocess.run(
        [*SNAKEMAKE, "--directory", str(tmp_path), "-n", "--config", f"study={study}"], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Job stats:" in run.stdout and "resolved_config" in run.stdout


def test_unknown_study_fails_before_running(tmp_path):
    run = subprocess.run(
        [*SNAKEMAKE, "--directory", str(tmp_path), "-n", "--config", "study=nope"], capture_output=True, text=True
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith("diffabm workflow: error: unknown study 'nope'")


def test_overrides_given_as_a_string_fail_before_running(tmp_path):
    run = subprocess.run(
        [*SNAKEMAKE, "--directory", str(tmp_path), "-n", "--config", "study=toy", "overrides=model.days=30"],
        capture_output=True,
        text=True,
    )
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
def test_lightning_neither_warns_about_srun_nor_takes_over_a_slurm_job(
    bh_observed, tmp_path, monkeypatch, inside_a_job
):
    """With `srun` on the PATH Lightning 2.6 warns (an error under the test suite's filterwarnings), and inside a
    SLURM job it would pick its SLURM environment, with its own auto-requeue on SIGUSR1: the Trainer runs in
    Lightning's plain environment instead, resuming being Snakemake's retries' business."""
    from lightning.fabric.plugins.environments import LightningEnvironment

    from diffabm.calibration import training
    from diffabm.calibration.stage import calibrate

    fake_srun(tmp_path, monkeypatch)
    if inside_a_job:  # what a Snakemake job submitted with sbatch sees
        for name, value in {
            "SLURM_JOB_ID": "42",
            "SLURM_JOB_NAME": "snakejob.calibrate",
            "SLURM_NTASKS": "1",
            "SLURM_PROCID": "0",
            "SLURM_LOCALID": "0",
            "SLURM_NODEID": "0",
        }.items():
            monkeypatch.setenv(name, value)
    trainers = []
    build_trainer = training.build_trainer
    monkeypatch.setattr(
        training, "build_trainer", lambda *a, **k: trainers.append(build_trainer(*a, **k)) or trainers[-1]
    )
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
        patch.setattr(
            PointCalibration, "on_train_epoch_start", lambda module: epochs.append(module.current_epoch), raising=False
        )
        run()
    return len(epochs)


def test_only_a_retry_resumes_a_calibration_and_a_fresh_run_deletes_the_checkpoint(bh_observed, tmp_path, monkeypatch):
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
    run = subprocess.run(
        [
            *SNAKEMAKE,
            "--workflow-profile",
            str(ROOT / "profiles/slurm"),
            "--directory",
            str(tmp_path),
            "-n",
            "results/toy/population.zarr",
            "--config",
            "study=toy",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "slurm_account=myproject, slurm_partition=short, runtime=60" in run.stdout + run.stderr


# The toy study with a point calibration on a tiny budget (the toy study has none of its own): a population, its
# observations and a calibration in seconds.
TOY_CALIBRATION = [
    "population.n_agents=500",
    "model.days=12",
    "model.draws=2",
    "+calibration=default",
    (
        "+truth={beta_household: 2.0, beta_school: 4.0, beta_workplace: 2.5, beta_community: 1.5, "
        "initial_fraction: 0.01}"
    ),
    "calibration.modes=[point]",
    "calibration.point.epochs=2",
    "calibration.point.draws_per_step=2",
    "calibration.fit_draws=2",
    "calibration.loggers=[csv]",
]


def config_arguments(study: str, overrides: list[str]) -> list[str]:
    """`--config study=... overrides=[...]` as Snakemake parses it (each override quoted as YAML)."""
    return ["--config", f"study={study}", "overrides=[" + ", ".join(f'"{override}"' for override in overrides) + "]"]


def planned_jobs(output: str) -> dict[str, int]:
    """The jobs a dry run plans, per rule (its "Job stats" table), without the target rule."""
    if "Job stats:" not in output:
        return {}
    lines = output.split("Job stats:", 1)[1].splitlines()[3:]
    jobs = {}
    for line in lines:
        fields = line.split()
        if len(fields) != 2 or fields[0] == "total":
            break
        jobs[fields[0]] = int(fields[1])
    return jobs


def test_rules_have_logs_benchmarks_and_resources_from_the_config():
    """Every rule (but `all`) has a log, a benchmark record at results/<study>/benchmarks/<rule>[-<wildcards>].tsv,
    and no hard-coded thread count other than 1 (figures, tables)."""
    text = "\n".join(path.read_text() for path in sorted((ROOT / "workflow/rules").glob("*.smk")))
    rules = re.split(r"^rule (\w+):\n", text, flags=re.MULTILINE)[1:]
    assert len(rules) >= 30
    for name, body in zip(rules[::2], rules[1::2]):
        body = body.split("\n\n\n")[0]
        assert "    log:\n" in body, name
        assert re.search(rf'benchmark:\n\s+"results/{{study}}/benchmarks/{name}(-[^"/]+)?\.tsv"', body), name
        threads = re.search(r"threads: (\S+)", body)
        assert threads and threads.group(1) in ("1", "simulation_threads", "calibration_threads"), name
        assert re.search(r"runtime=runtime\(\"(simulation|calibration|figures)\"\)", body), name
        assert "mem_mb=" in body, name
        if "resources:\n        attempt=job_attempt" in body:  # a resumable calibration is retried
            assert "    retries: CALIBRATION_RETRIES\n" in body, name


def test_job_resources_come_from_the_study_config(tmp_path):
    """Threads, runtime and the memory estimate (agents × draws × days) of a job follow the study's config."""
    overrides = [
        *TOY_CALIBRATION,
        "population.n_agents=200000",
        "calibration.threads=3",
        "resources.runtime.calibration=7",
    ]
    run = subprocess.run(
        [
            *SNAKEMAKE,
            "--cores",
            "4",
            "--directory",
            str(tmp_path),
            "-n",
            "results/toy/calibration/point/posterior.zarr",
            *config_arguments("toy", overrides),
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    calibrate = run.stdout.split("rule calibrate:", 1)[1].split("\n\n", 1)[0]
    assert "threads: 3" in calibrate and "runtime=7" in calibrate and "gpu=0" in calibrate
    # 200,000 toy agents × 2 draws × 12 days with gradients: 1,000 MB + 275 MB, rounded up to 100 MB
    assert "mem_mb=1300" in calibrate
    synthesize = run.stdout.split("rule synthesize:", 1)[1].split("\n\n", 1)[0]
    assert "runtime=60" in synthesize and "mem_mb=2000" in synthesize


def test_a_config_edit_reruns_exactly_the_jobs_that_read_it(tmp_path):
    """Each job's `config_hash` param hashes the config its stage reads: after a run, an edit of a calibration
    setting plans the calibration job again and not the population or the observations; a resource setting, another
    mode's setting or a section the jobs do not read plans nothing; an edit of the model plans the observations and
    the calibration, not the population."""
    target = "results/toy/calibration/point/posterior.zarr"
    run = subprocess.run(
        [*SNAKEMAKE, "--directory", str(tmp_path), target, *config_arguments("toy", TOY_CALIBRATION)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]

    def planned(*edits: str) -> dict[str, int]:
        dry = subprocess.run(
            [
                *SNAKEMAKE,
                "--directory",
                str(tmp_path),
                "-n",
                target,
                *config_arguments("toy", [*TOY_CALIBRATION, *edits]),
            ],
            check=False,
            capture_output=True,
            text=True,
        )
        assert dry.returncode == 0, dry.stderr[-3000:]
        return planned_jobs(dry.stdout)

    assert (
        planned(
            "calibration.flow.lr=0.07",
            "calibration.threads=1",
            "resources.runtime.calibration=5",
            "calibration.progress_bar=false",
            "resources.max_memory_gb=50",
        )
        == {}
    )
    assert planned("calibration.point.lr=0.07") == {"calibrate": 1}
    assert planned("truth.initial_fraction=0.02") == {"observe": 1, "calibrate": 1}
    assert planned("population.n_agents=600") == {"synthesize": 1, "observe": 1, "calibrate": 1}


def workflow_rules() -> set[str]:
    """Every rule of the workflow but `all`, read from the rule files."""
    rules = set()
    for path in [ROOT / "Snakefile", *sorted((ROOT / "workflow/rules").glob("*.smk"))]:
        rules |= set(re.findall(r"^rule (\w+):", path.read_text(), flags=re.MULTILINE))
    return rules - {"all"}


@pytest.mark.slow
@pytest.mark.workflow
def test_every_rule_runs_in_the_ci_studies(tmp_path):
    """The whole DAG under Snakemake: the `ci` study (every epidemic rule, at a tiny scale) and the Brock & Hommes
    gradient-horizon study on a tiny budget; together they must run every rule of the workflow, and the report
    must build from them."""
    (tmp_path / "data").symlink_to(ROOT / "data")
    bh = [
        *BH_TINY,
        "~calibration.variants",  # two of the study's six flows
        "+calibration.variants={H0: ['model.horizon=0'], score: ['calibration.flow.estimator=score']}",
        "calibration.flow.epochs=2",
        "calibration.flow.transforms=1",
        "gradient_study.estimators=[H0,score]",
        "gradient_study.samples=2",
        "gradient_study.repeats=3",
        "gradient_study.reference_samples=4",
        "gradient_study.flow_repeats=2",
        "sensitivity.posterior=flow_H0",
        "sensitivity.seeds=1",
        "sensitivity.posterior_draws=1",
    ]
    ran = set()
    for study, overrides in (("ci", []), (BH, bh)):
        config = ["--config", f"study={study}", f"overrides={overrides!r}"]
        run = subprocess.run([*SNAKEMAKE, "--directory", str(tmp_path), *config], capture_output=True, text=True)
        assert run.returncode == 0, f"{study}: {run.stderr[-4000:]}"
        ran |= set(re.findall(r"^(?:local)?rule (\w+):$", run.stdout + run.stderr, flags=re.MULTILINE))
        report = tmp_path / f"results/{study}/report.html"
        run = subprocess.run(
            [*SNAKEMAKE, "--directory", str(tmp_path), "--report", str(report), *config], capture_output=True, text=True
        )
        assert run.returncode == 0 and report.stat().st_size > 0, f"{study} report: {run.stderr[-3000:]}"
    assert workflow_rules() - ran == set(), "rules no CI study ran"
