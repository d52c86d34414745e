"""The workflow's HTML report (`make report`): its own items (the resolved config, the jobs' benchmark records, CSV
tables as HTML pages), and, slow, a tiny study's whole DAG and its report: one self-contained file holding every
figure and table with its caption, checked in a real headless browser where one is installed."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf

from diffabm.config import compose_study
from diffabm.report import (
    benchmark_records,
    write_benchmark_table,
    write_config,
    write_html_table,
)

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--cores", "2"]
BENCHMARK_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
# The toy study with a point and a flow calibration on a tiny budget: every kind of report item in about a minute.
TINY = [
    "population.n_agents=500",
    "model.days=12",
    "model.draws=2",
    "+calibration=default",
    (
        "+truth={beta_household: 2.0, beta_school: 4.0, beta_workplace: 2.5, beta_community: 1.5, "
        "initial_fraction: 0.01}"
    ),
    "calibration.modes=[point, flow]",
    "calibration.flow.loss_weight=1.0",
    "calibration.point.epochs=2",
    "calibration.point.draws_per_step=2",
    "calibration.flow.epochs=2",
    "calibration.flow.draws_per_step=2",
    "calibration.flow.transforms=1",
    "calibration.flow.hidden_features=[4]",
    "calibration.flow.posterior_draws=4",
    "calibration.fit_draws=2",
    "calibration.loggers=[csv]",
]


def test_the_resolved_config_reads_back_as_the_study_config(tmp_path):
    cfg = compose_study("toy", ["model.days=9"])
    path = write_config(cfg, tmp_path / "config.yaml", tmp_path / "config.html")
    text = path.read_text()
    assert "<pre># Resolved config of study toy" in (tmp_path / "config.html").read_text()
    assert text.startswith("# Resolved config of study toy (seed 1)") and "git commit" in text.splitlines()[1]
    assert yaml.safe_load(text) == OmegaConf.to_container(cfg, resolve=True)
    assert yaml.safe_load(text)["model"]["days"] == 9


def test_benchmark_records_name_rule_and_wildcards(tmp_path):
    benchmarks = tmp_path / "benchmarks"
    benchmarks.mkdir()
    for name, seconds in (
        ("simulate", 7.5),
        ("calibrate-flow", 60.25),
        ("sbc_calibrate-point-3", 2.0),
        ("benchmark_table", 1.0),
    ):
        (benchmarks / f"{name}.tsv").write_text(
            BENCHMARK_HEADER + f"{seconds}\t0:00:07\t340.5\t2322\t259\t280\t0\t1.0\t53.9\t4.1\n"
        )
    records = benchmark_records(benchmarks)
    assert sorted(zip(records["rule"], records["wildcards"])) == [
        ("calibrate", "flow"),
        ("sbc_calibrate", "point 3"),
        ("simulate", ""),
    ]
    assert records.set_index("rule").loc["calibrate", "wall_s"] == 60.25
    assert list(records.columns[:4]) == ["rule", "wildcards", "finished", "wall_s"]
    table = write_benchmark_table(benchmarks, tmp_path / "benchmarks.csv", tmp_path / "benchmarks.html")
    page = (tmp_path / "benchmarks.html").read_text()
    assert len(pd.read_csv(table)) == 3
    assert "3 jobs: 70 s of wall time" in page and page.index("calibrate") < page.index("simulate")  # slowest first
    assert "<script" not in page and "http" not in page  # self-contained
    write_benchmark_table(tmp_path / "none", tmp_path / "empty.csv", tmp_path / "empty.html")
    assert "No benchmark records." in (tmp_path / "empty.html").read_text()


def test_a_csv_table_as_an_html_page(tmp_path):
    table = tmp_path / "recovery.csv"
    pd.DataFrame(
        {"mode": ["point", "flow"], "parameter": ["beta", "beta"], "mean": [1.23456789, np.nan], "note": ["<b>", "a&b"]}
    ).to_csv(table, index=False)
    page = write_html_table(table, tmp_path / "recovery.html").read_text()
    assert "<table" in page and "1.235" in page and "&lt;b&gt;" in page and "a&amp;b" in page
    assert page.count("<tr") == 3


def report_items(html: str) -> dict[str, dict]:
    """The report's items (Snakemake embeds them as `var results = {...};`)."""
    return json.loads(re.search(r"var results = (\{.*?\});\n", html, flags=re.DOTALL).group(1))


@pytest.mark.slow
def test_a_tiny_studys_report_holds_every_figure_and_table_with_its_caption(tmp_path):
    """The tiny study's DAG, then `snakemake --report results/toy/report.html` (what `make report` runs): one HTML
    file, no external resources, with each figure, the recovery table, the population's fit tables, the resolved
    config and the benchmark records, each with its caption naming the study and seed; a headless Chromium shows
    the first page and a figure with its caption (where Chromium is installed)."""
    config = ["--config", "study=toy", "overrides=[" + ", ".join(f'"{override}"' for override in TINY) + "]"]
    run = subprocess.run(
        [*SNAKEMAKE, "--directory", str(tmp_path), *config], check=False, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = tmp_path / "results/toy/report.html"
    build = subprocess.run(
        [*SNAKEMAKE, "--directory", str(tmp_path), "--report", str(report), *config],
        check=False,
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    html = report.read_text(encoding="utf-8")
    assert not re.search(r"<(script|img|link)[^>]+(src|href)=[\"']https?:", html)  # everything inlined
    items = report_items(html)
    captions = {  # report item -> a phrase of its caption (workflow/report/*.rst)
        "results/toy/figures/simulation.png": "simulated at its configured parameters",
        "results/toy/figures/calibration_point.png": "Calibration (point) of study toy",
        "results/toy/figures/calibration_flow.png": "Calibration (flow) of study toy",
        "results/toy/report/recovery.html": "Recovery of the known parameters",
        "results/toy/population_report/group_sizes.csv": "toy population",
        "results/toy/report/config.html": "The resolved config",
        "results/toy/report/benchmarks.html": "Benchmark records of the jobs of study",
    }
    assert set(captions) <= set(items), sorted(items)
    for path, phrase in captions.items():
        caption = items[path]["caption"]
        assert phrase in caption, (path, caption[:300])
        if "config" not in path and "benchmarks" not in path:
            assert "seed 1" in caption and "calibration.flow.epochs=2" in caption, (path, caption[-600:])
        assert items[path]["data_uri"].startswith("data:"), path  # embedded, not linked
    benchmarks = pd.read_csv(tmp_path / "results/toy/benchmarks.csv")
    assert {"synthesize", "simulate", "observe", "calibrate", "plot_calibration", "recovery_table"} <= set(
        benchmarks["rule"]
    )
    assert "diffabm: study" in html  # the workflow's description, rendered

    spec = importlib.util.spec_from_file_location("report_screenshot", ROOT / "benchmarks/report_screenshot.py")
    screenshot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(screenshot)
    browser = screenshot.find_browser()
    if browser is None:
        pytest.skip("no headless Chromium on the PATH (Debian: apt-get install chromium): report not looked at")
    shots = screenshot.screenshots(report, tmp_path / "screenshots", browser, items=3)
    import matplotlib.image as mpimg

    for shot in shots:
        pixels = mpimg.imread(shot)
        assert pixels.shape[0] >= 900 and pixels[..., :3].std() > 0.05, shot  # drawn, not a blank page
