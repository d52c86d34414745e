"""The AD memory study (diffabm.studies.ad_memory, study `ad-memory`): the stage on a small grid writes its store,
tables and figure; reverse mode's peak memory grows with the days while forward mode's does not, and
checkpointing keeps reverse mode's below plain reverse mode's; the fits recover known coefficients. The full grid
runs in the workflow (`snakemake --config study=ad-memory`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from diffabm.config import compose_study
from diffabm.figures.ad_memory import plot_ad_memory
from diffabm.store import read_dataset
from diffabm.studies.ad_memory import Settings, ad_memory_dataset, fit_memory, write_ad_memory

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--cores", "2"]
# 20,000 agents: reverse mode keeps ≈ 2.5 bytes per agent and day (the day's group totals; ≈ 6 MB over the 116 days
# between the two lengths), far above the ≈ 0.2 MB by which fresh processes' peaks differ; checkpointing grows
# with √T and pays off only past ≈ 40 days since reverse mode keeps so little.
AGENTS, SHORT, LONG = 20_000, 4, 120
MODES = ["reverse", "forward", "checkpointed"]  # no_gradient runs in the slow test and the study


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    cfg = compose_study(
        "ad-memory",
        [
            f"ad_memory.agents={AGENTS}",
            "ad_memory.small_agents=null",
            f"ad_memory.days=[{LONG},{SHORT}]",
            "ad_memory.repeats=1",
            f"ad_memory.modes=[{','.join(MODES)}]",
        ],
    )
    return write_ad_memory(cfg, tmp_path_factory.mktemp("ad_memory") / "ad_memory.zarr")


def test_the_stage_writes_every_mode_and_length_with_fits_tables_and_figure(store, tmp_path):
    ds = read_dataset(store)
    assert list(ds["mode"].values) == MODES and list(ds["days"].values) == [SHORT, LONG]
    assert ds["peak_bytes"].dims == ("mode", "days") and ds.sizes["repeat"] == 1
    assert (ds["peak_bytes"] > 0).all() and (ds["seconds"] > 0).all()
    np.testing.assert_allclose(ds["mb_per_1000_agents"], ds["peak_bytes"] / AGENTS * 1000 / 1e6)
    # the resident set's rise and the live tensors' peak are two measurements of the same memory; checkpointing's
    # recomputed segments leave freed blocks in the heap (its RSS was 27% above its tensor peak at 120 days)
    plain = ds.sel(mode=["reverse", "forward"])
    np.testing.assert_allclose(plain["total_mb_per_1000_agents"], plain["tensor_mb_per_1000_agents"], rtol=0.25)
    checkpointed = ds.sel(mode="checkpointed")
    assert (checkpointed["total_mb_per_1000_agents"] >= 0.75 * checkpointed["tensor_mb_per_1000_agents"]).all()
    assert list(ds["fit_form"].values) == ["a + b·T", "a", "a + b·√T"]
    reverse = ds.sel(mode="reverse")
    expected = 53e6 * (reverse["fit_a_bytes_per_agent"] + reverse["fit_b_bytes_per_agent"] * 300) / 1e9
    assert float(reverse["england_gb"]) == pytest.approx(float(expected))
    assert np.isfinite(ds["england_gb"]).all() and (ds["england_gb"] > 0).all()
    assert float(ds["paper_england_gb"].sel(mode="reverse")) == 5000
    assert float(ds["paper_england_gb"].sel(mode="forward")) == 18
    table = pd.read_csv(store.with_suffix(".csv"))
    assert len(table) == len(MODES) * 2 and set(table["agents"]) == {AGENTS}
    assert list(pd.read_csv(store.with_name("ad_memory_england.csv"))["mode"]) == MODES
    png = plot_ad_memory(store, tmp_path / "ad_memory.png")
    with Image.open(png) as image:
        assert image.size[0] > 1000 and image.text["Source"] == str(store)


def test_reverse_mode_memory_grows_with_the_days_and_forward_mode_memory_does_not(store):
    per_agent = read_dataset(store)["peak_bytes"] / AGENTS
    growth = per_agent.sel(days=LONG) - per_agent.sel(days=SHORT)
    assert float(growth.sel(mode="reverse")) > 1.5 * (LONG - SHORT)  # bytes per agent and day
    assert abs(float(growth.sel(mode="forward"))) < 0.2 * float(growth.sel(mode="reverse"))
    assert float(growth.sel(mode="checkpointed")) < 0.8 * float(growth.sel(mode="reverse"))


def test_the_fits_recover_known_coefficients():
    days = np.array([10.0, 40.0, 90.0])
    assert fit_memory(days, 100 + 3 * days, "reverse", None)[:3] == pytest.approx(("a + b·T", 100, 3))
    assert fit_memory(days, 50 + 7 * np.sqrt(days), "checkpointed", None)[:3] == pytest.approx(("a + b·√T", 50, 7))
    assert fit_memory(days, 50 + 7 * days, "checkpointed", 5)[:3] == pytest.approx(("a + b·T", 50, 7))
    form, a, b, residual = fit_memory(days, np.array([90.0, 100.0, 110.0]), "forward", None)
    assert (form, a, b) == ("a", pytest.approx(100), 0) and residual == pytest.approx(10 / 90)


def test_two_population_sizes_separate_the_memory_per_agent_from_the_fixed_bytes():
    """Peaks of 1,000 fixed bytes + (100 + 2·T) bytes per agent on 10,000 and 1,000 agents: the fit recovers 100 and
    2, not the fixed bytes spread over the agents."""
    settings = Settings(10_000, 1_000, (10, 50), ("reverse",), None, 1, 53e6, 300)
    memory = [
        {"mode": "reverse", "days": days, "agents": agents, "peak_bytes": 1_000 + agents * (100 + 2 * days)}
        for days in settings.days
        for agents in (10_000, 1_000)
    ]
    timing = [
        {"mode": "reverse", "days": days, "seconds": [1.0], "cpu_seconds": [1.0], "tensor_peak_bytes": 1.0}
        for days in settings.days
    ]
    ds = ad_memory_dataset(memory, timing, settings).sel(mode="reverse")
    np.testing.assert_allclose(ds["fixed_bytes"], 1_000)
    np.testing.assert_allclose(ds["mb_per_1000_agents"], [0.12, 0.2])
    assert float(ds["fit_a_bytes_per_agent"]) == pytest.approx(100)
    assert float(ds["fit_b_bytes_per_agent"]) == pytest.approx(2)
    assert float(ds["england_gb"]) == pytest.approx(53e6 * 700 / 1e9)


def test_a_study_without_the_section_is_refused_naming_it():
    with pytest.raises(ValueError, match="no `ad_memory:` section"):
        Settings.from_config(compose_study("toy"))


def test_the_study_dag_has_the_memory_rules(tmp_path):
    run = subprocess.run(
        [*SNAKEMAKE, "--directory", str(tmp_path), "-n", "--config", "study=ad-memory"], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "ad_memory" in run.stdout and "plot_ad_memory" in run.stdout


@pytest.mark.slow
def test_the_study_runs_through_snakemake(tmp_path):
    overrides = (
        'overrides=["population.n_agents=500", "model.days=10", "ad_memory.agents=5000", '
        '"ad_memory.small_agents=1000", "ad_memory.days=[3,6]", "ad_memory.repeats=1", '
        '"ad_memory.modes=[no_gradient,checkpointed]"]'
    )
    run = subprocess.run(
        [*SNAKEMAKE, "--directory", str(tmp_path), "--config", "study=ad-memory", overrides],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = tmp_path / "results" / "ad-memory"
    for name in ("ad_memory.zarr", "ad_memory.csv", "ad_memory_england.csv", "figures/ad_memory.png"):
        assert (results / name).exists(), name
    assert "rule ad_memory done" in (results / "logs" / "ad_memory.log").read_text()
