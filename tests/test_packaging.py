"""The package as a user installs it: a wheel (non-editable) composes every study outside the checkout, from the
Hydra configs it ships (pkg://diffabm.conf) and their JSON schema."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_wheel_installed_outside_the_checkout_composes_the_studies(tmp_path):
    leftover = not (ROOT / "build").exists()  # setuptools builds in the checkout's build/: remove ours after
    try:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                str(ROOT),
                "--no-deps",
                "--no-build-isolation",
                "--quiet",
                "--wheel-dir",
                str(tmp_path / "wheel"),
            ],
            check=True,
            capture_output=True,
            cwd=tmp_path,
        )
    finally:
        if leftover:
            shutil.rmtree(ROOT / "build", ignore_errors=True)
    (wheel,) = (tmp_path / "wheel").glob("diffabm-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "site")
    assert not (tmp_path / "site" / "diffabm" / "conf").is_symlink(), "the wheel holds the configs themselves"
    studies = sorted(path.stem for path in (ROOT / "conf" / "experiment").glob("*.yaml"))
    script = (
        "import diffabm, diffabm.config as c; print(diffabm.__file__); "
        f"print(*[c.compose_study(s).study for s in {studies!r}])"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    location, composed = run.stdout.splitlines()
    assert location.startswith(str(tmp_path / "site")), "the wheel's copy, not the checkout's"
    assert composed.split() == studies
