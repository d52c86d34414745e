"""The Brock & Hommes gradient-horizon study (bh-gradient-horizon) on a tiny budget: its DAG resolves without a
population, and its stages run end to end (observe, a flow per estimator, the gradient study, the report)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from diffabm.config import compose_study
from diffabm.store import read_dataset

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "model.steps=20",
    "calibration.flow.epochs=3",
    "calibration.flow.transforms=2",
    "calibration.fit_draws=4",
    "calibration.flow.posterior_draws=50",
    "calibration.loggers=[csv]",
    "gradient_study.repeats=4",
    "gradient_study.reference_samples=16",
    "gradient_study.flow_repeats=3",
    "gradient_study.estimators=[H0,score]",
]


def test_the_study_dag_has_no_population_and_one_flow_per_estimator(tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(ROOT / "Snakefile"),
            "--directory",
            str(tmp_path),
            "-n",
            "--config",
            "study=bh-gradient-horizon",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "synthesize" not in run.stdout
    counts = dict(
        line.split()[:2]
        for line in run.stdout.splitlines()
        if line.split()[:1] and line.split()[0] in ("calibrate_variant", "gradient_study", "gradient_horizon_report")
    )
    assert counts == {"calibrate_variant": "6", "gradient_study": "1", "gradient_horizon_report": "1"}


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory) -> Path:
    """The study's stages in process on a tiny budget: (results folder)."""
    from diffabm.calibration.observe import observe
    from diffabm.calibration.stage import calibrate
    from diffabm.figures.gradient_horizon import gradient_horizon_report
    from diffabm.studies.gradient_horizon import write_gradient_study

    root = tmp_path_factory.mktemp("bh")
    cfg = compose_study("bh-gradient-horizon", TINY)
    observe(cfg, None, root / "observed.zarr")
    runs = {"H0": ["model.horizon=0"], "score": ["calibration.flow.estimator=score_plain"]}
    for name, overrides in runs.items():
        calibrate(
            compose_study("bh-gradient-horizon", [*TINY, *overrides]),
            "flow",
            None,
            root / "observed.zarr",
            root / f"flow_{name}",
        )
    write_gradient_study(cfg, root / "observed.zarr", root / "gradient_study.zarr")
    gradient_horizon_report(
        cfg,
        root / "gradient_study.zarr",
        {name: root / f"flow_{name}" / "posterior.zarr" for name in runs},
        {name: root / f"flow_{name}" / "metrics.csv" for name in runs},
        root / "figures",
        root / "gradient_horizon.csv",
    )
    return root


def test_the_tiny_study_writes_its_stores_figures_and_table(tiny_study):
    study = read_dataset(tiny_study / "gradient_study.zarr")
    assert study["gaussian_estimates"].shape == (2, 4, 8)
    assert list(study.estimator.values) == ["H0", "score"]
    assert study["flow_sd"].sizes["estimator"] == 2 and bool(study["flow_active"].any())
    posterior = read_dataset(tiny_study / "flow_H0" / "posterior.zarr")
    assert sorted(posterior.data_vars) == ["b2", "b3", "g2", "g3"] and posterior.sizes["draw"] == 50
    fit = read_dataset(tiny_study / "flow_H0" / "fit.zarr")
    assert fit["x"].dims == ("draw", "time") and "observed_x" in fit
    for name in ("fig1_training_loss", "fig2_gradient_spread", "fig5_posterior", "fig6_gradient_estimates"):
        for suffix in (".png", ".pdf"):
            assert (tiny_study / "figures" / f"{name}{suffix}").stat().st_size > 0
    table = pd.read_csv(tiny_study / "gradient_horizon.csv")
    assert table["estimator"].tolist() == ["H0", "score"]
    assert table[["final_loss", "g2_mean", "gradient_sd", "bias_in_se"]].notna().all().all()
    # the score estimator's spread far exceeds H0's (helper measurements: 1-2 orders of magnitude)
    assert (
        table.set_index("estimator").loc["score", "gradient_sd"] > table.set_index("estimator").loc["H0", "gradient_sd"]
    )


def test_gradient_spread_grows_from_horizon_zero_to_the_score_estimator():
    """At the study's settings (T = 100, N = 5, 200 repeats, Gaussian q at μ = (0.5, 0.5, 0, 0), σ = 0.1) the
    mean sd over φ_j is H0 < H2 < score (measured 0.039, 0.16, 1.46; each sd from 200 repeats has a relative
    standard error of about 5%, so the 4x and 9x gaps are far outside the noise)."""
    from diffabm.build import build_model
    from diffabm.config import compose_study
    from diffabm.studies.gradient_horizon import diagonal_gaussian_estimates

    cfg = compose_study("bh-gradient-horizon")

    def factory(horizon):
        return build_model(
            compose_study("bh-gradient-horizon", [f"model.horizon={'null' if horizon is None else horizon}"])
        )

    model = factory(None)
    truth = {name: torch.tensor([value]) for name, value in {**model.defaults, **cfg.truth}.items()}
    observed = model.simulate(truth, seed=int(cfg.seed))["x"][0]
    study = diagonal_gaussian_estimates(
        factory,
        observed,
        [0.5, 0.5, 0.0, 0.0],
        [0.1] * 4,
        ["H0", "H2", "score"],
        samples=5,
        repeats=200,
        reference_samples=1000,
        seed=int(cfg.seed),
    )
    spread = {
        name: float(np.mean(values.std(0, ddof=1))) for name, values in zip(study["estimators"], study["estimates"])
    }
    assert spread["H0"] * 2 < spread["H2"] and spread["H2"] * 3 < spread["score"], spread


@pytest.mark.parametrize("mode", ["point", "calibnn", "ensemble"])
def test_every_calibration_mode_runs_on_brock_hommes(tiny_study, tmp_path, mode):
    """The modes know no model: point, Calib-NN and an ensemble member run on Brock & Hommes unchanged (the flow runs
    in the tiny study above)."""
    from diffabm.calibration.stage import calibrate

    cfg = compose_study("bh-gradient-horizon", [*TINY, f"calibration.{mode}.epochs=2"])
    calibrate(cfg, mode, None, tiny_study / "observed.zarr", tmp_path, member=0 if mode == "ensemble" else None)
    posterior = read_dataset(tmp_path / "posterior.zarr")
    assert sorted(posterior.data_vars) == ["b2", "b3", "g2", "g3"]
    assert np.isfinite(posterior.to_array().values).all()
