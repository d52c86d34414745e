"""Simulation-based calibration (diffabm.studies.sbc): ranks, rank histograms, the chi-square test and interval
coverage on cases with a known answer (exact posteriors of a conjugate model pass; over-confident, under-confident
and biased ones fail), and the stages on small stores written here. The full SBC (study `sbc`) runs in the
workflow, not in the tests."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from PIL import Image

from diffabm.calibration.observe import observe
from diffabm.config import compose_study
from diffabm.figures.sbc import plot_sbc
from diffabm.store import read_dataset, write_dataset
from diffabm.studies.sbc import (
    binomial_band,
    chi_square_sf,
    chi_square_uniformity,
    dataset_config,
    dataset_ranks,
    dataset_seed,
    rank_histogram,
    sbc_rank,
    sbc_summary,
    thin,
    write_sbc,
)

DATASETS, RANK_DRAWS, STORED, BINS = 400, 99, 990, 10


def conjugate_sbc(sd_factor: float = 1.0, shift: float = 0.0, seed: int = 0) -> pd.Series:
    """SBC of θ ~ N(0, 1), y_1..y_5 ~ N(θ, 1), whose exact posterior is N(Σy / 6, 1/6), against posteriors whose sd
    is `sd_factor` times and whose mean is `shift` posterior sds off the exact one: the summary row of θ."""
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(DATASETS):
        theta = rng.normal()
        y = rng.normal(theta, 1.0, size=5)
        mean, sd = y.sum() / 6, math.sqrt(1 / 6)
        draws = rng.normal(mean + shift * sd, sd_factor * sd, size=STORED)
        rows += dataset_ranks({"theta": theta}, {"theta": draws}, RANK_DRAWS, seed=index)
    return sbc_summary(pd.DataFrame(rows), RANK_DRAWS, BINS).iloc[0]


def test_exact_posteriors_give_uniform_ranks_and_nominal_coverage():
    summary = conjugate_sbc()
    assert summary["datasets"] == DATASETS
    assert summary["p_value"] > 0.01, summary
    # coverage within 3 binomial standard errors (0.025 and 0.015 for 400 data sets) of 50% and 90%
    assert abs(summary["z_50"]) < 3 and abs(summary["z_90"]) < 3, summary
    counts = summary[[f"bin_{b}" for b in range(BINS)]].to_numpy()
    assert counts.sum() == DATASETS
    assert ((counts >= summary["band99_low"]) & (counts <= summary["band99_high"])).sum() >= BINS - 1


def test_an_over_confident_posterior_fails_with_ranks_piled_at_both_ends():
    summary = conjugate_sbc(sd_factor=0.5)
    assert summary["p_value"] < 1e-6
    assert summary["z_50"] < -3 and summary["z_90"] < -3  # under-coverage: 90% intervals hold ~59%
    counts = summary[[f"bin_{b}" for b in range(BINS)]].to_numpy()
    assert counts[0] > 2 * counts[BINS // 2] and counts[-1] > 2 * counts[BINS // 2]  # ∪-shaped


def test_an_under_confident_posterior_fails_with_ranks_piled_in_the_middle():
    summary = conjugate_sbc(sd_factor=2.0)
    assert summary["p_value"] < 1e-6
    assert summary["z_50"] > 3 and summary["z_90"] > 3


def test_a_biased_posterior_fails():
    summary = conjugate_sbc(shift=1.0)  # the mean one posterior sd too high: truths rank low
    assert summary["p_value"] < 1e-6
    counts = summary[[f"bin_{b}" for b in range(BINS)]].to_numpy()
    assert counts[: BINS // 2].sum() > 2 * counts[BINS // 2 :].sum()


def test_ranks_count_draws_below_the_truth_and_break_ties_at_random():
    rng = np.random.default_rng(0)
    assert sbc_rank(0.5, np.array([0.1, 0.2, 0.7, 0.9]), rng) == 2
    assert sbc_rank(-1.0, np.array([0.1, 0.2]), rng) == 0 and sbc_rank(1.0, np.array([0.1, 0.2]), rng) == 2
    tied = {sbc_rank(1.0, np.ones(3), rng) for _ in range(200)}
    assert tied == {0, 1, 2, 3}  # a posterior collapsed onto the truth: uniform, not always 0
    np.testing.assert_array_equal(thin(np.arange(990), 99), np.arange(0, 990, 10))
    with pytest.raises(ValueError, match="fewer than rank_draws"):
        thin(np.arange(50), 99)


def test_histogram_chi_square_and_binomial_band_against_hand_values():
    np.testing.assert_array_equal(rank_histogram([0, 24, 25, 99], 99, 4), [2, 1, 0, 1])
    with pytest.raises(ValueError, match="do not split"):
        rank_histogram([0], 99, 3)
    with pytest.raises(ValueError, match=r"ranks must lie in 0\.\.99"):
        rank_histogram([100], 99, 4)
    assert chi_square_uniformity([5, 5, 5, 5]) == (0.0, 1.0)
    statistic, p_value = chi_square_uniformity([20, 0, 0, 0])
    assert statistic == 60.0 and p_value < 1e-12
    assert chi_square_sf(3.841458820694124, 1) == pytest.approx(0.05, rel=1e-6)  # χ²(1) 95% quantile
    assert chi_square_sf(7.814727903251178, 3) == pytest.approx(0.05, rel=1e-6)  # χ²(3) 95% quantile
    cdf = np.cumsum([math.comb(20, k) * 0.25**k * 0.75 ** (20 - k) for k in range(21)])
    expected = (int(np.searchsorted(cdf, 0.005)), int(np.searchsorted(cdf, 0.995)))
    assert binomial_band(20, 0.25) == expected == (1, 10)


# ---------------------------------------------------------------- the stages (study sbc, small stores)


def small_sbc_config(datasets: int = 2):
    return compose_study("sbc", [f"sbc.datasets={datasets}", "population.n_agents=2000", "model.days=20"])


def test_each_data_set_has_its_own_reproducible_seed_and_prior_truth(small_population):
    cfg = small_sbc_config(datasets=3)
    first, again, second = (dataset_config(cfg, i, small_population) for i in (0, 0, 1))
    assert first.truth == again.truth and first.seed == again.seed == dataset_seed(cfg.seed, 0)
    assert first.seed != second.seed and first.truth != second.truth
    assert set(first.truth) == set(cfg.calibration.prior)
    assert 0 < first.truth.initial_fraction < 1 and first.truth.beta_household > 0
    assert first.calibration == cfg.calibration and first.model == cfg.model
    real = compose_study("sbc", ["+observed={kind: nz_reported_cases, file: x.csv, locations: [Auckland]}"])
    assert "observed" not in dataset_config(real, 0, small_population), "SBC data are simulated, not the record"
    with pytest.raises(ValueError, match=r"data set 3 is not one of the study's sbc\.datasets = 3"):
        dataset_config(cfg, 3, small_population)
    with pytest.raises(ValueError, match=r"sbc\.bins=3 must divide the rank_draws"):
        dataset_config(compose_study("sbc", ["sbc.bins=3"]), 0, small_population)
    with pytest.raises(ValueError, match=r"exceeds calibration\.flow\.posterior_draws"):
        dataset_config(compose_study("sbc", ["calibration.flow.posterior_draws=50"]), 0, small_population)


def test_the_sbc_stages_rank_truths_from_observe_among_stored_posteriors(small_population, tmp_path):
    """observe at each data set's truth, posteriors written here (draws around the truth), write_sbc and the figure."""
    cfg = small_sbc_config(datasets=2)
    observed, posteriors = [], []
    for index in range(2):
        variant = dataset_config(cfg, index, small_population)
        observed.append(observe(variant, small_population, tmp_path / f"{index}/observed.zarr"))
        truth = read_dataset(observed[-1]).attrs["truth"]
        assert truth["beta_household"] == pytest.approx(variant.truth.beta_household)
        draws = {
            name: (("draw",), float(value) * np.exp(np.linspace(-0.5, 0.5, 990) + 0.001 * (index + 1)))
            for name, value in variant.truth.items()
        }
        posteriors.append(write_dataset(xr.Dataset(draws), tmp_path / f"{index}/posterior.zarr", variant, variant.seed))
    paths = {name: tmp_path / name for name in ("sbc.zarr", "ranks.csv", "summary.csv")}
    write_sbc(cfg, small_population, observed, posteriors, *paths.values())
    ranks = pd.read_csv(paths["ranks.csv"])
    assert len(ranks) == 2 * 3 and set(ranks["parameter"]) == set(cfg.calibration.prior)
    # 50 of the 99 thinned draws (every 10th) lie below the truth: rank 50, inside both intervals
    assert (ranks["rank"] == 50).all() and ranks["inside_50"].all() and ranks["inside_90"].all()
    summary = pd.read_csv(paths["summary.csv"])
    assert (summary["bin_2"] == 2).all() and (summary["coverage_90"] == 1.0).all()
    np.testing.assert_allclose(summary["se_90"], math.sqrt(0.09 / 2), rtol=1e-5)
    store = read_dataset(paths["sbc.zarr"])
    assert store["rank"].dims == ("dataset", "parameter") and "study: sbc" in store.attrs["config"]
    assert list(store["seed"].values) == [dataset_seed(cfg.seed, i) for i in range(2)]
    figure = plot_sbc(paths["sbc.zarr"], tmp_path / "sbc.png")
    with Image.open(figure) as image:
        assert image.info["git_commit"] == store.attrs["git_commit"]

    with pytest.raises(ValueError, match=r"2 observed and 1 posterior stores for sbc.datasets = 2"):
        write_sbc(cfg, small_population, observed, posteriors[:1], *paths.values())
    short = write_dataset(read_dataset(posteriors[1]).isel(draw=slice(0, 50)), tmp_path / "short.zarr", cfg, 0)
    with pytest.raises(ValueError, match=r"sbc data set 1: .*short.zarr has 50 draws, fewer than sbc.rank_draws = 99"):
        write_sbc(cfg, small_population, observed, [posteriors[0], short], *paths.values())
