"""The workflow on a real SLURM cluster: a single-node cluster (Debian's `slurm-wlm` and `munge`, installed by
tests/slurm/install.sh, started by tests/slurm/start.sh with its own slurm.conf, munge key and ports in a temporary
folder, stopped by tests/slurm/stop.sh through the daemons' pid files) runs the toy study through
`--workflow-profile profiles/slurm`, and its stores equal a local run's. Marked `slurm` (and `slow`): `make
test-slurm`, run by .ci/run. Where SLURM cannot be installed or started here (no root, no apt-get, no package
mirror) it skips, with the reason; `SLURM_TEST_DISABLE=1` skips it too."""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import xarray as xr

from diffabm.store import read_dataset

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "tests" / "slurm"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]
# The toy study, small: synthesize and simulate, two jobs of a few seconds each.
STUDY = ["--config", "study=toy", 'overrides=["population.n_agents=2000", "model.days=15", "model.draws=2"]']
TARGET = "results/toy/simulation.zarr"
STORES = {"synthesize": "results/toy/population.zarr", "simulate": "results/toy/simulation.zarr"}
# Provenance that differs between two runs of the same seeds: when a store was written, and the commit (in case
# one was made between the runs). Everything else (data, coordinates, config, seed, versions, checksums) must match.
VOLATILE_ATTRS = ("created", "git_commit")
GLOBAL_CONF = Path("/etc/slurm/slurm.conf")


def slurm_unavailable(env: dict[str, str] | None = None) -> str | None:
    """Why no SLURM cluster can be brought up here (the skip reason), or None after installing it if need be."""
    env = os.environ if env is None else env
    if env.get("SLURM_TEST_DISABLE", "") not in ("", "0"):
        return f"SLURM_TEST_DISABLE={env['SLURM_TEST_DISABLE']}"
    if os.geteuid() != 0:
        return "not root: the test's SLURM daemons (slurmctld, slurmd, munged) run as root"
    install = subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(SCRIPTS / "install.sh")], capture_output=True, text=True, env=env
    )
    if install.returncode != 0:
        lines = install.stderr.strip().splitlines()
        return lines[-1] if lines else f"tests/slurm/install.sh failed (exit {install.returncode})"
    return None


def free_ports() -> int:
    """The first of two free consecutive TCP ports (slurmctld's and slurmd's), so that two runs of this test, or a
    cluster already on the machine, do not meet."""
    for port in random.Random().sample(range(20000, 30000, 2), 50):
        with socket.socket() as first, socket.socket() as second:
            try:
                first.bind(("", port))
                second.bind(("", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no two free consecutive ports in 20000-30000")


@contextmanager
def slurm_cluster(directory: Path):
    """A running single-node cluster whose files all lie in `directory`: yields the environment that points the
    SLURM commands at it; stops the daemons by their pid files and removes `directory` on the way out."""
    port = os.environ.get("SLURM_TEST_PORT") or str(free_ports())
    start = subprocess.run(
        ["bash", str(SCRIPTS / "start.sh"), str(directory)],
        capture_output=True,
        text=True,
        env={**os.environ, "SLURM_TEST_PORT": port},
    )
    try:
        assert start.returncode == 0, f"tests/slurm/start.sh failed:\n{start.stdout}{start.stderr}"
        yield {
            **os.environ,
            "SLURM_CONF": str(directory / "slurm.conf"),
            # srun inside the jobs: see start.sh (the jobstep plugin drops SLURM_CONF)
            "PATH": f"{directory / 'bin'}{os.pathsep}{os.environ['PATH']}",
        }
    finally:
        stop = subprocess.run(["bash", str(SCRIPTS / "stop.sh"), str(directory)], capture_output=True, text=True)
        assert stop.returncode == 0, f"tests/slurm/stop.sh failed:\n{stop.stderr}"


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def slurm_logs(workdir: Path) -> str:
    """The SLURM plugin's job logs (.snakemake/slurm_logs), for a failure message."""
    logs = sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
    return "".join(f"\n--- {log.relative_to(workdir)}\n{log.read_text()[-3000:]}" for log in logs) or " (none)"


def comparable(store: Path) -> xr.Dataset:
    ds = read_dataset(store)  # checks every array against its recorded checksum
    return ds.assign_attrs({name: None for name in VOLATILE_ATTRS if name in ds.attrs})


@pytest.mark.slurm
@pytest.mark.slow
def test_the_toy_study_on_a_slurm_cluster_equals_a_local_run(tmp_path):
    reason = slurm_unavailable()
    if reason:
        pytest.skip(f"no SLURM cluster: {reason}")
    cluster, on_slurm, local = tmp_path / "cluster", tmp_path / "slurm-run", tmp_path / "local-run"
    conf_existed = GLOBAL_CONF.exists()
    with slurm_cluster(cluster) as env:
        pids = {
            name: int((cluster / path).read_text())
            for name, path in (("slurmctld", "slurmctld.pid"), ("slurmd", "slurmd.pid"), ("munged", "munge/munged.pid"))
        }
        env["DIFFABM_SLURM_PARTITION"] = "debug"  # the profile's partition from the environment
        env.pop("DIFFABM_SLURM_ACCOUNT", None)  # none: the plugin finds no accounting and submits without one
        # Job logs kept (the plugin deletes those of jobs that succeeded); the first status check after 2 s, not 40.
        command = [
            *SNAKEMAKE,
            "--workflow-profile",
            str(ROOT / "profiles/slurm"),
            "--directory",
            str(on_slurm),
            "--slurm-keep-successful-logs",
            "--slurm-init-seconds-before-status-checks",
            "2",
            TARGET,
            *STUDY,
        ]
        on_slurm.mkdir()
        with open(on_slurm / "snakemake.out", "w") as out:
            slurm_run = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, text=True, env=env)
            # Meanwhile (the SLURM run mostly waits for its status checks), the same study locally, default profile.
            local_run = subprocess.run(
                [*SNAKEMAKE, "--cores", "2", "--directory", str(local), TARGET, *STUDY], capture_output=True, text=True
            )
            try:
                slurm_run.wait(timeout=600)
            finally:
                slurm_run.kill()
        output = (on_slurm / "snakemake.out").read_text()
        assert slurm_run.returncode == 0, f"{output[-4000:]}\nSLURM job logs:{slurm_logs(on_slurm)}"
        assert local_run.returncode == 0, local_run.stderr[-3000:]
        # The jobs went through slurmctld: squeue (finished jobs stay MinJobAge = 300 s) lists those submitted, named
        # after the run's SLURM run ID, completed in the partition on this node, and each left its log (one per rule)
        # where the plugin writes them.
        (run_id,) = [line.split(":", 1)[1].strip() for line in output.splitlines() if line.startswith("SLURM run ID:")]
        submitted = set(re.findall(r"has been submitted with SLURM jobid (\d+)", output))
        squeue = subprocess.run(
            ["squeue", "--states=all", "--noheader", "--format=%i|%j|%T|%P|%N"],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout.split()
        jobs = {line.split("|")[0]: line.split("|")[2:] for line in squeue if line.split("|")[1] == run_id}
        node = os.uname().nodename.split(".")[0]
        assert set(jobs) == submitted and len(jobs) == len(STORES), (squeue, output[-4000:])
        assert all(job == ["COMPLETED", "debug", node] for job in jobs.values()), squeue
        logs = {log.stem: log for log in (on_slurm / ".snakemake/slurm_logs").rglob("*.log")}
        assert set(logs) == submitted, slurm_logs(on_slurm)
        assert sorted(log.parent.parent.name for log in logs.values()) == [f"rule_{rule}" for rule in sorted(STORES)]
        for log in logs.values():
            rule = log.parent.parent.name.removeprefix("rule_")
            assert f"Finished jobid: 0 (Rule: {rule})" in log.read_text(), slurm_logs(on_slurm)
        for store in STORES.values():
            xr.testing.assert_identical(comparable(on_slurm / store), comparable(local / store))
    # Stopped by their pid files, the cluster's folder (its slurm.conf) removed, no slurm.conf left in /etc.
    assert not [name for name, pid in pids.items() if running(pid)]
    assert not cluster.exists()
    assert GLOBAL_CONF.exists() == conf_existed


def test_the_slurm_test_skips_with_the_reason_where_slurm_cannot_be_installed(tmp_path, monkeypatch):
    """No apt-get (an empty PATH): the install script fails, its last line the reason; SLURM_TEST_DISABLE=1 skips
    without trying. (Whatever the machine: the checks stop before anything is installed.)"""
    env = {key: value for key, value in os.environ.items() if key != "SLURM_TEST_DISABLE"}
    assert slurm_unavailable({**env, "SLURM_TEST_DISABLE": "1"}) == "SLURM_TEST_DISABLE=1"
    if os.geteuid() != 0:
        assert slurm_unavailable(env).startswith("not root")
        return
    reason = slurm_unavailable({**env, "PATH": str(tmp_path)})
    assert reason is not None and reason.startswith("cannot install SLURM: no apt-get"), reason
