"""Stores carry provenance and are written atomically; configs and the CLI fail clearly."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

from diffabm.cli import main
from diffabm.config import CONFIG_DIR, ConfigError, compose_study
from diffabm.population.schema import Population, read_population
from diffabm.population.toy import toy_population
from diffabm.store import read_dataset, write_dataset


def test_population_round_trips_with_provenance(tmp_path):
    cfg = compose_study("toy")
    population = toy_population(500, seed=1)
    write_dataset(population.to_dataset(), tmp_path / "population.zarr", cfg, seed=1)
    ds = read_dataset(tmp_path / "population.zarr")
    for key in ("config", "seed", "git_commit", "diffabm_version", "created", "package_versions"):
        assert key in ds.attrs
    assert "study: toy" in ds.attrs["config"]
    again = read_population(tmp_path / "population.zarr")
    assert np.array_equal(again.age, population.age)
    for layer in population.layers:
        assert np.array_equal(again.groups[layer], population.groups[layer])


def test_store_under_snakemake_opens_without_warnings(tmp_path):
    """A rule's store holds Snakemake's `.snakemake_timestamp` marker; plain xarray opens it without a warning."""
    path = write_dataset(toy_population(50, seed=1).to_dataset(), tmp_path / "population.zarr", None, seed=1)
    (path / ".snakemake_timestamp").touch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with xr.open_zarr(path) as ds:
            assert ds.sizes["agent"] == 50


def test_failed_write_leaves_no_output(tmp_path):
    bad = xr.Dataset({"x": ("agent", np.array([object()], dtype=object))})
    with pytest.raises((TypeError, ValueError)):
        write_dataset(bad, tmp_path / "out.zarr", None, seed=0)
    assert list(tmp_path.iterdir()) == []


def test_toy_population_is_seeded_and_consistent():
    a, b, c = toy_population(3000, seed=1), toy_population(3000, seed=1), toy_population(3000, seed=2)
    assert np.array_equal(a.groups["household"], b.groups["household"])
    assert not np.array_equal(a.age, c.age)
    pupils = a.groups["school"] >= 0
    assert a.age[pupils].min() >= 5 and a.age[pupils].max() <= 17
    workers = a.groups["workplace"] >= 0
    assert a.age[workers].min() >= 18 and a.age[workers].max() <= 64
    household_has_adult = np.zeros(a.groups["household"].max() + 1, bool)
    household_has_adult[a.groups["household"][a.age >= 18]] = True
    assert household_has_adult.all()


def test_population_rejects_bad_fields():
    population = toy_population(100, seed=1)
    with pytest.raises(ValueError, match=r"field 'age' has value 130"):
        Population(np.full(100, 130), population.sex, population.ethnicity, population.area, population.groups)
    with pytest.raises(ValueError, match=r"layer 'household' has shape"):
        Population(
            population.age,
            population.sex,
            population.ethnicity,
            population.area,
            {"household": np.zeros(99, dtype=np.int64)},
        )


def test_unknown_study_and_override_are_clear_errors():
    with pytest.raises(ConfigError, match=r"unknown study 'nope'"):
        compose_study("nope")
    with pytest.raises(ConfigError, match=r"model.no_such_key"):
        compose_study("toy", ["model.no_such_key=1"])


def test_cli_exits_non_zero_with_a_message(tmp_path, capsys):
    code = main(
        [
            "simulate",
            "--study",
            "toy",
            "--population",
            str(tmp_path / "missing.zarr"),
            "--output",
            str(tmp_path / "sim.zarr"),
        ]
    )
    assert code == 2
    assert "missing.zarr" in capsys.readouterr().err
    assert not (tmp_path / "sim.zarr").exists()


def test_cli_runs_the_toy_stages(tmp_path):
    population, simulation = tmp_path / "population.zarr", tmp_path / "simulation.zarr"
    overrides = ["population.n_agents=1000", "model.days=10", "model.draws=2"]
    assert (
        main(
            [
                "synthesize",
                "--study",
                "toy",
                "--population",
                str(population),
                "--report",
                str(tmp_path / "report"),
                *overrides,
            ]
        )
        == 0
    )
    assert (
        main(["simulate", "--study", "toy", "--population", str(population), "--output", str(simulation), *overrides])
        == 0
    )
    ds = read_dataset(simulation)
    assert ds["new_infections"].dims == ("draw", "time")
    assert ds["stage_counts"].dims == ("draw", "time", "stage")
    assert int(ds["stage_counts"].isel(draw=0, time=-1).sum()) == 1000
    assert (tmp_path / "report" / "group_sizes.csv").exists()


@pytest.mark.parametrize("study", sorted(path.stem for path in (CONFIG_DIR / "experiment").glob("*.yaml")))
def test_every_study_composes_under_its_own_name_with_known_parameters(study):
    cfg = compose_study(study)
    assert cfg.study == study  # results/<study>/ must not collide with the study it extends
    known = set(cfg.model.parameters)
    assert set(cfg.get("truth") or {}) <= known
    if "calibration" in cfg:
        assert set(cfg.calibration.prior) <= known
