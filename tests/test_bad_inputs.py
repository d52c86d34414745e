"""Bad input, stage by stage, through the command line: exit code 2, one line on stderr naming the file or
field and the value, and no output left behind. Also: a calibration rerun after its inputs change starts
afresh, a planted checkpoint never runs code, and interrupted writes leave no lasting debris."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from diffabm.calibration.observe import observe
from diffabm.cli import main
from diffabm.config import compose_study
from diffabm.population.toy import toy_population
from diffabm.store import read_dataset, write_dataset

ROOT = Path(__file__).resolve().parents[1]
CENSUS = ROOT / "data" / "nz" / "census"
TOY = ["population.n_agents=600", "model.days=12", "model.draws=2"]
# The default study's calibration on a toy population: 12 days, its school closure moved inside them.
CALIBRATION = [
    "population=toy",
    "population.n_agents=600",
    "model.days=12",
    "interventions.0.start=4",
    "interventions.0.end=8",
    "calibration.loggers=[csv]",
    "calibration.progress_bar=false",
    "calibration.point.epochs=2",
    "calibration.point.draws_per_step=2",
    "calibration.fit_draws=2",
]


@dataclass(frozen=True)
class Case:
    """One bad input: the CLI arguments (given the fixture's paths), what the one-line error must contain, and the
    output that must not exist afterwards (relative to the case's folder)."""

    argv: Callable[[dict[str, Path]], list[str]]
    expected: tuple[str, ...]
    output: str
    prepare: Callable[[dict[str, Path]], None] = field(default=lambda paths: None)


def simulate(*overrides: str, population: str = "population") -> Callable[[dict[str, Path]], list[str]]:
    return lambda p: [
        "simulate",
        "--study",
        "toy",
        "--population",
        str(p[population]),
        "--output",
        str(p["case"] / "simulation.zarr"),
        *TOY,
        *overrides,
    ]


def calibrate(
    *overrides: str, observed: str = "observed", mode: str = "point", extra: tuple[str, ...] = ()
) -> Callable[[dict[str, Path]], list[str]]:
    return lambda p: [
        "calibrate",
        "--study",
        "default",
        "--mode",
        mode,
        "--population",
        str(p["population"]),
        "--observed",
        str(p[observed]),
        "--run-dir",
        str(p["case"] / "run"),
        *(arg.format(**p) for arg in extra),
        *CALIBRATION,
        *overrides,
    ]


def sensitivity(*overrides: str, posterior: str | None = None) -> Callable[[dict[str, Path]], list[str]]:
    return lambda p: [
        "sensitivity",
        "--study",
        "default",
        "--population",
        str(p["population"]),
        "--output",
        str(p["case"] / "sensitivity.zarr"),
        *(["--posterior", str(p["case"] / posterior)] if posterior else []),
        *CALIBRATION,
        *overrides,
    ]


def posterior_with(name: str, control: str) -> Callable[[dict[str, Path]], None]:
    """Writes a posterior store `name` of two draws: β_household and a daily `control` over 5 days."""

    def write(p: dict[str, Path]) -> None:
        draws = {"beta_household": ("draw", np.full(2, 3.0)), control: (("draw", "time"), np.ones((2, 5)))}
        write_dataset(xr.Dataset(draws), p["case"] / name, None, 0)

    return write


def intervention(spec: str) -> Callable[[dict[str, Path]], list[str]]:
    return simulate(f"+interventions=[{spec}]")


def corrupt_store(source: str, change: Callable[[Path], None]) -> Callable[[dict[str, Path]], None]:
    """Copy store `source` to `<case>/<source>` and change the copy; the case then reads the copy."""

    def prepare(p: dict[str, Path]) -> None:
        copy = p["case"] / f"{source}.zarr"
        shutil.copytree(p[source], copy)
        change(copy)
        p[f"bad_{source}"] = copy

    return prepare


def observed_with(change: Callable[[xr.Dataset], xr.Dataset]) -> Callable[[dict[str, Path]], None]:
    """An observed store (valid checksums) whose contents `change` altered."""

    def prepare(p: dict[str, Path]) -> None:
        p["bad_observed"] = write_dataset(change(read_dataset(p["observed"])), p["case"] / "observed.zarr", None, 0)

    return prepare


def census_with(table: str, change: Callable[[pd.DataFrame], pd.DataFrame] | None) -> Callable[[dict], None]:
    """A copy of the census tables with `table` changed (or removed, for None)."""

    def prepare(p: dict[str, Path]) -> None:
        data = p["case"] / "census"
        shutil.copytree(CENSUS, data)
        path = data / f"{table}.parquet"
        if change is None:
            path.unlink()
        else:
            frame = change(pd.read_parquet(path))
            path.unlink()
            frame.to_parquet(path, index=False)

    return prepare


def synthesize_census(p: dict[str, Path]) -> list[str]:
    return [
        "synthesize",
        "--study",
        "default",
        "--population",
        str(p["case"] / "population.zarr"),
        "--report",
        str(p["case"] / "report"),
        f"population.data_dir={p['case'] / 'census'}",
    ]


def planted_checkpoint(payload: bytes) -> Callable[[dict[str, Path]], None]:
    """`run/checkpoints/last.ckpt` holding `payload`, beside the run configuration of the case's own run, so that
    the calibration would resume from it."""

    def prepare(p: dict[str, Path]) -> None:
        from diffabm.calibration.training import run_configuration

        cfg = compose_study("default", CALIBRATION)
        checkpoints = p["case"] / "run" / "checkpoints"
        checkpoints.mkdir(parents=True)
        inputs = {"population": p["population"], "observed": p["observed"], "loss_weight": None}
        (checkpoints / "run_config.yaml").write_text(run_configuration(cfg, "point", int(cfg.seed), inputs))
        (checkpoints / "last.ckpt").write_bytes(payload)

    return prepare


class RunsCode:
    """A pickle that would create a file when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def loss_weight_file(text: str) -> Callable[[dict[str, Path]], None]:
    def prepare(p: dict[str, Path]) -> None:
        (p["case"] / "w.json").write_text(text)
        p["weight"] = p["case"] / "w.json"

    return prepare


def drop(path: str) -> Callable[[Path], None]:
    return lambda store: (store / path).unlink()


def overwrite(path: str, content: bytes) -> Callable[[Path], None]:
    return lambda store: (store / path).write_bytes(content)


def _set(column: str, row: int, value) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        frame.loc[row, column] = value
        return frame

    return change


CASES: dict[str, Case] = {
    # Overrides and config values (checked against the schema when the study is composed)
    "days not a number": Case(simulate("model.days=abc"), ("model.days", "'abc'"), "simulation.zarr"),
    "zero draws": Case(simulate("model.draws=0"), ("model.draws", "0"), "simulation.zarr"),
    "fractional seed": Case(simulate("seed=1.5"), ("'seed'", "1.5"), "simulation.zarr"),
    "misspelled key": Case(simulate("+model.dayz=30"), ("model.dayz", "30"), "simulation.zarr"),
    "initial fraction above 1": Case(
        simulate("model.parameters.initial_fraction=1.5"),
        ("model.parameters.initial_fraction", "1.5"),
        "simulation.zarr",
    ),
    "negative beta": Case(
        simulate("model.parameters.beta_school=-1"), ("model.parameters.beta_school", "-1"), "simulation.zarr"
    ),
    "NaN susceptibility": Case(
        simulate("model.course.susceptibility=[0.4,nan,0.79,0.86,0.8,0.82,0.88,0.74]"),
        ("model.course.susceptibility[1]", "nan"),
        "simulation.zarr",
    ),
    "zero latent period": Case(
        simulate("model.course.latent.mean=0"), ("model.course.latent.mean", "0"), "simulation.zarr"
    ),
    "code as estimator": Case(
        simulate("model.estimator._target_=builtins.open"),
        ("model.estimator._target_", "builtins.open"),
        "simulation.zarr",
    ),
    "unknown seeding": Case(simulate("model.seeding=random"), ("model.seeding", "'random'"), "simulation.zarr"),
    "impossible date": Case(simulate("start_date=2021-02-30"), ("start_date", "2021-02-30"), "simulation.zarr"),
    "negative learning rate": Case(calibrate("calibration.point.lr=-1"), ("calibration.point.lr", "-1"), "run"),
    "unknown calibration mode in config": Case(
        calibrate("calibration.modes=[pointy]"), ("calibration.modes[0]", "'pointy'"), "run"
    ),
    "empty toy population": Case(simulate("population.n_agents=0"), ("population.n_agents", "0"), "simulation.zarr"),
    "negative memory limit": Case(
        simulate("resources.max_memory_gb=-1"), ("resources.max_memory_gb", "-1"), "simulation.zarr"
    ),
    "code as calibration module": Case(
        calibrate("calibration.point._target_=builtins.exec"), ("calibration.point._target_", "builtins.exec"), "run"
    ),
    "unknown mode on the command line": Case(calibrate(mode="pointy"), ("'pointy'",), "run"),
    # Interventions
    "end before start": Case(
        intervention("{kind:contact_multiplier,layers:[school],start:5,end:3,multiplier:0}"),
        ("interventions[0].end", "3"),
        "simulation.zarr",
    ),
    "start after the last day": Case(
        intervention("{kind:contact_multiplier,layers:[school],start:40,multiplier:0}"),
        ("interventions[0].start", "40"),
        "simulation.zarr",
    ),
    "end after the last day": Case(
        intervention("{kind:contact_multiplier,layers:[school],start:2,end:99,multiplier:0}"),
        ("interventions[0].end", "99"),
        "simulation.zarr",
    ),
    "date before the start": Case(
        intervention("{kind:contact_multiplier,layers:[school],start:'2020-01-01',multiplier:0}"),
        ("interventions[0].start", "2020-01-01"),
        "simulation.zarr",
    ),
    "misspelled intervention field": Case(
        intervention("{kind:contact_multiplier,layers:[school],start:2,multiplier:0,ned:5}"),
        ("interventions[0].ned", "5"),
        "simulation.zarr",
    ),
    "missing intervention field": Case(
        intervention("{kind:contact_multiplier,layers:[school],start:2}"),
        ("interventions[0].multiplier", "missing"),
        "simulation.zarr",
    ),
    "unknown layer": Case(
        intervention("{kind:contact_multiplier,layers:[gym],start:2,multiplier:0}"),
        ("interventions[0].layers", "gym"),
        "simulation.zarr",
    ),
    "unknown kind": Case(
        intervention("{kind:curfew,layers:[school],start:2,multiplier:0}"),
        ("interventions[0].kind", "curfew"),
        "simulation.zarr",
    ),
    "compliance above 1": Case(
        intervention("{kind:isolation,compliance:1.5,delay_days:1}"),
        ("interventions[0].compliance", "1.5"),
        "simulation.zarr",
    ),
    "two isolations": Case(
        simulate(
            "+interventions=[{kind:isolation,compliance:0.5,delay_days:1},{kind:isolation,compliance:0.2,delay_days:0}]"
        ),
        ("interventions[1].kind", "isolation"),
        "simulation.zarr",
    ),
    # Memory
    "more memory than allowed": Case(
        simulate("resources.max_memory_gb=0.0001"), ("model.draws", "GB", "resources.max_memory_gb"), "simulation.zarr"
    ),
    # Stores
    "missing population store": Case(
        simulate(population="nowhere"),
        ("nowhere.zarr", "does not exist"),
        "simulation.zarr",
        lambda p: p.update(nowhere=p["case"] / "nowhere.zarr"),
    ),
    "missing chunk": Case(
        simulate(population="bad_population"),
        ("population.zarr", "'age'", "checksum"),
        "simulation.zarr",
        corrupt_store("population", drop("age/c/0")),
    ),
    "missing array metadata": Case(
        simulate(population="bad_population"),
        ("population.zarr", "'age'", "missing"),
        "simulation.zarr",
        corrupt_store("population", drop("age/zarr.json")),
    ),
    "missing store metadata": Case(
        simulate(population="bad_population"),
        ("population.zarr", "metadata"),
        "simulation.zarr",
        corrupt_store("population", drop("zarr.json")),
    ),
    "corrupt chunk": Case(
        simulate(population="bad_population"),
        ("population.zarr", "'age'", "cannot be read"),
        "simulation.zarr",
        corrupt_store("population", overwrite("age/c/0", b"garbage")),
    ),
    "corrupt array metadata": Case(
        simulate(population="bad_population"),
        ("population.zarr", "'age'", "metadata"),
        "simulation.zarr",
        corrupt_store("population", overwrite("age/zarr.json", b"{")),
    ),
    "store without checksums": Case(
        simulate(population="bad_population"),
        ("population.zarr", "no checksums"),
        "simulation.zarr",
        corrupt_store(
            "population",
            lambda store: (
                shutil.rmtree(store),
                toy_population(50, seed=1).to_dataset().to_zarr(store, consolidated=False),
            ),
        ),
    ),
    "observed store as population": Case(
        simulate(population="observed"), ("observed.zarr", "missing fields"), "simulation.zarr"
    ),
    # Observed data
    "NaN observation": Case(
        calibrate(observed="bad_observed"),
        ("observed.zarr", "'new_infections'", "nan"),
        "run",
        observed_with(lambda ds: ds.assign(new_infections=ds.new_infections.where(ds.time != ds.time[3]))),
    ),
    "negative observation": Case(
        calibrate(observed="bad_observed"),
        ("observed.zarr", "'new_infections'", "-4"),
        "run",
        observed_with(lambda ds: ds.assign(new_infections=ds.new_infections * 0 - 4)),
    ),
    "wrong dimension name": Case(
        calibrate(observed="bad_observed"),
        ("observed.zarr", "'new_infections'", "day"),
        "run",
        observed_with(lambda ds: ds.assign(new_infections=("day", ds.new_infections.values))),
    ),
    "missing observable": Case(
        calibrate(observed="bad_observed"),
        ("observed.zarr", "'new_infections'", "missing"),
        "run",
        observed_with(lambda ds: ds.drop_vars("new_infections")),
    ),
    "text observation": Case(
        calibrate(observed="bad_observed"),
        ("observed.zarr", "'new_infections'", "dtype"),
        "run",
        observed_with(lambda ds: ds.assign(new_infections=ds.new_infections.astype(str))),
    ),
    "too few days observed": Case(
        calibrate(observed="bad_observed"),
        ("observed.zarr", "'new_infections'", "11"),
        "run",
        observed_with(lambda ds: ds.isel(time=slice(1, None))),
    ),
    # Checkpoints and loss weights
    "checkpoint that runs code": Case(
        calibrate(extra=("--resume",)),
        ("last.ckpt", "cannot be loaded safely"),
        "run/posterior.zarr",
        lambda p: planted_checkpoint(pickle.dumps(RunsCode(p["case"] / "pwned")))(p),
    ),
    "truncated checkpoint": Case(
        calibrate(extra=("--resume",)),
        ("last.ckpt", "cannot be loaded safely"),
        "run/posterior.zarr",
        planted_checkpoint(b"PK\x03\x04 truncated"),
    ),
    "loss weight not JSON": Case(
        calibrate("calibration.flow.loss_weight=auto", mode="flow", extra=("--loss-weight", "{weight}")),
        ("w.json", "not a loss-weight file"),
        "run",
        loss_weight_file("{not json"),
    ),
    "negative loss weight": Case(
        calibrate("calibration.flow.loss_weight=auto", mode="flow", extra=("--loss-weight", "{weight}")),
        ("w.json", "-0.5"),
        "run",
        loss_weight_file(json.dumps({"loss_weight": -0.5})),
    ),
    "missing loss weight file": Case(
        calibrate("calibration.flow.loss_weight=auto", mode="flow", extra=("--loss-weight", "{case}/nowhere.json")),
        ("nowhere.json", "FileNotFoundError"),
        "run",
    ),
    # Other stages and the Brock & Hommes study
    "observe without a truth": Case(
        lambda p: [
            "observe",
            "--study",
            "toy",
            "--population",
            str(p["population"]),
            "--output",
            str(p["case"] / "observed.zarr"),
            *TOY,
        ],
        ("truth",),
        "observed.zarr",
    ),
    "loss weight of a missing posterior": Case(
        lambda p: [
            "loss-weight",
            "--study",
            "default",
            "--population",
            str(p["population"]),
            "--observed",
            str(p["observed"]),
            "--posterior",
            str(p["case"] / "nowhere.zarr"),
            "--output",
            str(p["case"] / "w.json"),
            *CALIBRATION,
        ],
        ("nowhere.zarr", "does not exist"),
        "w.json",
    ),
    "plot of a store without series": Case(
        lambda p: [
            "plot-simulation",
            "--simulation",
            str(p["population"]),
            "--output",
            str(p["case"] / "simulation.png"),
        ],
        ("population.zarr", "(draw, time)"),
        "simulation.png",
    ),
    "negative gradient horizon": Case(
        lambda p: [
            "simulate",
            "--study",
            "bh-gradient-horizon",
            "--output",
            str(p["case"] / "simulation.zarr"),
            "model.horizon=-1",
        ],
        ("model.horizon", "-1"),
        "simulation.zarr",
    ),
    "population for a model without one": Case(
        lambda p: [
            "simulate",
            "--study",
            "bh-gradient-horizon",
            "--population",
            str(p["population"]),
            "--output",
            str(p["case"] / "simulation.zarr"),
        ],
        ("no population section", "population.zarr"),
        "simulation.zarr",
    ),
    "unknown sensitivity method": Case(
        sensitivity("sensitivity.methods=[adjoint]"), ("sensitivity.methods[0]", "'adjoint'"), "sensitivity.zarr"
    ),
    "sensitivity of an unknown observable": Case(
        sensitivity("sensitivity.outputs=[{observable: infections_by_pet, summary: total}]"),
        ("sensitivity.outputs[0].observable", "infections_by_pet"),
        "sensitivity.zarr",
    ),
    "missing posterior for the sensitivity": Case(
        sensitivity(posterior="nowhere.zarr"), ("nowhere.zarr",), "sensitivity.zarr"
    ),
    "sensitivity at a posterior whose controls do not fit the model": Case(
        sensitivity(posterior="calibnn.zarr"),
        ("calibnn.zarr", "'transmission_multiplier'", "5 time labels"),
        "sensitivity.zarr",
        posterior_with("calibnn.zarr", "transmission_multiplier"),
    ),
    "sensitivity at a posterior with a variable the model lacks": Case(
        sensitivity(posterior="other.zarr"),
        ("other.zarr", "'transmission_by_pet'", "neither a parameter nor a control"),
        "sensitivity.zarr",
        posterior_with("other.zarr", "transmission_by_pet"),
    ),
    "posterior draws without a posterior": Case(
        sensitivity("sensitivity.posterior_draws=2"),
        ("sensitivity.posterior_draws", "2", "sensitivity.posterior is null"),
        "sensitivity.zarr",
    ),
    "unknown AD mode": Case(sensitivity("ad.mode=adjoint"), ("ad.mode", "'adjoint'"), "sensitivity.zarr"),
    "checkpoints of zero days": Case(sensitivity("ad.segment_days=0"), ("ad.segment_days", "0"), "sensitivity.zarr"),
    "forward mode with a straight-through estimator": Case(
        sensitivity(
            "ad.mode=forward",
            "model/estimator=straight_through",
            "sensitivity.posterior_draws=0",
            "sensitivity.methods=[forward_mode]",
        ),
        ("ad.mode: forward cannot differentiate", "model.estimator StraightThrough"),
        "sensitivity.zarr",
    ),
    "forward passes of no tangent": Case(
        sensitivity("ad.tangents_per_pass=0"), ("ad.tangents_per_pass", "0"), "sensitivity.zarr"
    ),
    "forward mode through a Calib-NN's control": Case(
        calibrate("ad.mode=forward", "calibration.calibnn.control=transmission_multiplier", mode="calibnn"),
        ("ad.mode: forward", "transmission_multiplier"),
        "run",
    ),
    "unknown AD memory mode": Case(
        lambda p: [
            "ad-memory",
            "--study",
            "ad-memory",
            "--output",
            str(p["case"] / "ad_memory.zarr"),
            "ad_memory.modes=[adjoint]",
        ],
        ("ad_memory.modes[0]", "'adjoint'"),
        "ad_memory.zarr",
    ),
    "AD memory of one day length only": Case(
        lambda p: [
            "ad-memory",
            "--study",
            "ad-memory",
            "--output",
            str(p["case"] / "ad_memory.zarr"),
            "ad_memory.days=[50]",
        ],
        ("ad_memory.days", "[50]"),
        "ad_memory.zarr",
    ),
    "AD memory's small population not smaller": Case(
        lambda p: [
            "ad-memory",
            "--study",
            "ad-memory",
            "--output",
            str(p["case"] / "ad_memory.zarr"),
            "ad_memory.small_agents=50000",
        ],
        ("ad_memory.small_agents", "50000", "ad_memory.agents = 40000"),
        "ad_memory.zarr",
    ),
    # Census tables
    "census column missing": Case(
        synthesize_census,
        ("household_composition.parquet", "'num'"),
        "population.zarr",
        census_with("household_composition", lambda df: df.drop(columns="num")),
    ),
    "census negative count": Case(
        synthesize_census,
        ("household_composition.parquet", "'num'", "-2"),
        "population.zarr",
        census_with("household_composition", _set("num", 7, -2)),
    ),
    "census table missing": Case(
        synthesize_census, ("schools.parquet",), "population.zarr", census_with("schools", None)
    ),
}


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    """A toy population and observations of the default study's calibration at its truth (12 days)."""
    root = tmp_path_factory.mktemp("stores")
    cfg = compose_study("default", CALIBRATION)
    population = write_dataset(toy_population(600, seed=3).to_dataset(), root / "population.zarr", cfg, 3)
    return {"population": population, "observed": observe(cfg, population, root / "observed.zarr")}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_exit_2_and_no_output(name, stores, tmp_path, capsys):
    case = CASES[name]
    paths = {**stores, "case": tmp_path}
    case.prepare(paths)
    capsys.readouterr()
    code = main(case.argv(paths))
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("diffabm "), err
    for expected in case.expected:
        assert expected in lines[0], (expected, lines[0])
    assert not (tmp_path / case.output).exists()
    assert not (tmp_path / "pwned").exists()  # the planted checkpoint never ran


def test_the_installed_command_exits_2_and_debug_shows_the_traceback(tmp_path):
    command = [
        sys.executable,
        "-m",
        "diffabm",
        "simulate",
        "--study",
        "toy",
        "--population",
        str(tmp_path / "missing.zarr"),
        "--output",
        str(tmp_path / "out.zarr"),
    ]
    quiet = subprocess.run(command, capture_output=True, text=True)
    assert quiet.returncode == 2 and quiet.stderr.count("\n") == 1 and "missing.zarr" in quiet.stderr
    debug = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "DIFFABM_DEBUG": "1"})
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_a_rerun_with_changed_observations_starts_afresh(stores, tmp_path):
    """The stale-resume case: the second run must fit the new data, as a fresh run on it does."""
    from diffabm.calibration.stage import calibrate as run

    cfg = compose_study("default", CALIBRATION)
    observed = tmp_path / "observed.zarr"
    shutil.copytree(stores["observed"], observed)
    run(cfg, "point", stores["population"], observed, tmp_path / "run")
    first = read_dataset(tmp_path / "run" / "posterior.zarr")
    other = compose_study("default", [*CALIBRATION, "truth.beta_household=6.0", "truth.initial_fraction=0.02"])
    observe(other, stores["population"], observed)
    run(cfg, "point", stores["population"], observed, tmp_path / "run", resume=True)  # as a retry would
    rerun = read_dataset(tmp_path / "run" / "posterior.zarr")
    run(cfg, "point", stores["population"], observed, tmp_path / "fresh")
    fresh = read_dataset(tmp_path / "fresh" / "posterior.zarr")
    for name in ("beta_household", "initial_fraction"):
        assert not np.array_equal(rerun[name].values, first[name].values)
        np.testing.assert_array_equal(rerun[name].values, fresh[name].values)


def test_an_interrupted_write_leaves_no_lasting_temporary(tmp_path):
    stale = tmp_path / ".store.zarr.0123abcd.tmp"
    stale.mkdir()
    (stale / "zarr.json").write_text("{}")
    write_dataset(toy_population(50, seed=1).to_dataset(), tmp_path / "store.zarr", None, 0)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["store.zarr"]
