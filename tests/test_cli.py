"""The command line: one entry per stage the workflow runs (the list taken from the Snakemake scripts), each
binding to its stage function; `--version`; no Lightning imported to parse a command line; the calibration
stages after `calibrate` (merge, figure, recovery table) from the command line."""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pandas as pd
import pytest

import diffabm
from diffabm.cli import STAGES, main, parser
from diffabm.store import read_dataset

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "workflow" / "scripts").glob("*.py"))


def script_stage(path: Path) -> str:
    """The stage function (`module:name`) a workflow script calls: the call in its `run_job(smk, lambda cfg: ...)`."""
    tree = ast.parse(path.read_text())
    imported = {
        alias.asname or alias.name: f"{node.module}:{alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    (call,) = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "run_job"
    ]
    body = call.args[1].body
    assert isinstance(body, ast.Call) and isinstance(body.func, ast.Name), f"{path.name}: not run_job(smk, lambda: f())"
    return imported[body.func.id]


def test_the_scripts_are_read():
    stages = {path.name: script_stage(path) for path in SCRIPTS}
    assert stages["merge_ensemble.py"] == "diffabm.calibration.ensemble:merge_ensemble"
    assert stages["sbc_calibrate.py"] == "diffabm.calibration.stage:calibrate"  # not dataset_config, its argument
    assert len(stages) >= 20


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.stem)
def test_every_stage_a_workflow_script_calls_has_a_cli_entry(script):
    stage = script_stage(script)
    entries = [name for name, entry in STAGES.items() if entry.stage_function == stage]
    assert entries, f"workflow/scripts/{script.name} calls {stage}, which no `diffabm` command runs (cli.STAGES)"


def test_every_entry_binds_to_its_function():
    """Each entry's function takes (cfg,) paths and options as the command line passes them, and names its stage."""
    for name, stage in STAGES.items():
        function = stage.resolve()
        arguments = [object()] * (len(stage.paths) + stage.needs_config)
        inspect.signature(function).bind(*arguments, **{option: None for option in stage.options})
        assert stage.help and "\n" not in stage.help, name
        module, function_name = stage.stage_function.split(":")
        assert callable(getattr(importlib.import_module(module), function_name)), name


@pytest.mark.parametrize("name", list(STAGES))
def test_each_stage_formats_its_help(name):
    """`diffabm <stage> --help` works for every stage (argparse formats help texts only then: a stray `%` would
    crash it there and nowhere else)."""
    subparsers = next(action for action in parser()._actions if action.dest == "stage")
    text = subparsers.choices[name].format_help()
    assert text.startswith(f"usage: diffabm {name}") and STAGES[name].help in " ".join(text.split())


def test_version_is_the_installed_packages():
    run = subprocess.run([sys.executable, "-m", "diffabm", "--version"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"diffabm {version('diffabm')}"
    assert version("diffabm") == diffabm.__version__  # pyproject and the package agree


def test_parsing_a_command_line_imports_neither_lightning_nor_torch():
    code = (
        "import sys; from diffabm.cli import parser; "
        "parser().parse_args(['calibrate', '--mode', 'point', '--observed', 'o', '--run-dir', 'r']); "
        "print(sorted(m for m in ('lightning', 'torch') if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == "[]", run.stdout + run.stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["recovery-table", "--run", "point", "--output", "r.csv"], "--run 'point' is not NAME=PATH"),
        (["recovery-table", "--run", "a=x", "--run", "a=y", "--output", "r.csv"], "--run: 'a' given twice"),
        (
            ["merge-ensemble", "--observed", "o", "--posterior", "p", "--fit", "f", "--metrics", "m"],
            "the following arguments are required: --member",
        ),
    ],
)
def test_a_bad_command_line_is_one_line_and_exit_2(argv, message, capsys):
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_the_calibration_stages_after_calibrate_run_from_the_command_line(tmp_path):
    """Brock & Hommes on a tiny budget: two ensemble members, merged, plotted, and in the recovery table."""
    study = ["--study", "bh-gradient-horizon"]
    tiny = [
        "model.steps=10",
        "model.draws=2",
        "calibration.ensemble.epochs=2",
        "calibration.ensemble.draws_per_step=2",
        "calibration.fit_draws=2",
        "calibration.loggers=[csv]",
    ]
    observed, ensemble = tmp_path / "observed.zarr", tmp_path / "ensemble"
    assert main(["observe", *study, "--output", str(observed), *tiny]) == 0
    for member in (0, 1):
        assert (
            main(
                [
                    "calibrate",
                    *study,
                    "--mode",
                    "ensemble",
                    "--member",
                    str(member),
                    "--observed",
                    str(observed),
                    "--run-dir",
                    str(ensemble / "members" / str(member)),
                    *tiny,
                ]
            )
            == 0
        )
    run = {name: str(ensemble / name) for name in ("posterior.zarr", "fit.zarr", "metrics.csv")}
    assert (
        main(
            [
                "merge-ensemble",
                *study,
                *(f"--member={ensemble / 'members' / str(k) / 'posterior.zarr'}" for k in (0, 1)),
                "--observed",
                str(observed),
                "--posterior",
                run["posterior.zarr"],
                "--fit",
                run["fit.zarr"],
                "--metrics",
                run["metrics.csv"],
                *tiny,
            ]
        )
        == 0
    )
    posterior = read_dataset(ensemble / "posterior.zarr")
    assert (posterior.sizes["chain"], posterior.sizes["draw"]) == (2, 1), "one chain per member"
    assert (
        main(
            [
                "plot-calibration",
                *study,
                "--posterior",
                run["posterior.zarr"],
                "--fit",
                run["fit.zarr"],
                "--metrics",
                run["metrics.csv"],
                "--output",
                str(tmp_path / "ensemble.png"),
                *tiny,
            ]
        )
        == 0
    )
    assert (tmp_path / "ensemble.png").stat().st_size > 0
    assert main(["recovery-table", "--run", f"ensemble={ensemble}", "--output", str(tmp_path / "recovery.csv")]) == 0
    table = pd.read_csv(tmp_path / "recovery.csv")
    assert set(table["mode"]) == {"ensemble"} and sorted(table["parameter"]) == ["b2", "b3", "g2", "g3"]


@pytest.mark.parametrize(
    ("variable", "default", "user_choice"),
    [("OMP_WAIT_POLICY", "PASSIVE", "ACTIVE"), ("THP_MEM_ALLOC_ENABLE", "1", "0")],
)
def test_importing_diffabm_sets_the_runtime_defaults_unless_the_user_chose(variable, default, user_choice):
    """Spin-waiting OpenMP threads made the simulator 4x slower under load, page faults on torch's large tensors
    the course draws 2.3x: diffabm sets OMP_WAIT_POLICY=PASSIVE and THP_MEM_ALLOC_ENABLE=1 on import (before torch
    loads) and keeps a value the user set."""
    script = f"import os, diffabm; print(os.environ['{variable}'])"
    env = {key: value for key, value in os.environ.items() if key != variable}
    for preset, expected in ((None, default), (user_choice, user_choice)):
        run = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env=env if preset is None else {**env, variable: preset},
        )
        assert run.stdout.strip() == expected


THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


@pytest.mark.skipif(
    not THP_MODE.exists() or "[madvise]" not in THP_MODE.read_text(),
    reason="huge pages for torch's tensors are what THP_MEM_ALLOC_ENABLE changes only where the kernel's THP mode "
    "is madvise",
)
def test_torch_tensors_get_huge_pages_after_importing_diffabm():
    """A 128 MB tensor lies on transparent huge pages (smaps' AnonHugePages) once diffabm is imported first, and not
    where the user turned them off."""
    script = (
        "import diffabm, torch; t = torch.ones(2**25); "
        "print(sum(int(line.split()[1]) for line in open('/proc/self/smaps') if line.startswith('AnonHugePages')))"
    )
    env = {key: value for key, value in os.environ.items() if key != "THP_MEM_ALLOC_ENABLE"}
    huge_kb = {
        choice: int(
            subprocess.run(
                [sys.executable, "-c", script],
                capture_output=True,
                text=True,
                check=True,
                env=env if choice is None else {**env, "THP_MEM_ALLOC_ENABLE": choice},
            ).stdout
        )
        for choice in (None, "0")
    }
    assert huge_kb[None] >= 64 * 1024 and huge_kb["0"] < 64 * 1024
