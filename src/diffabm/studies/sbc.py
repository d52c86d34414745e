"""Simulation-based calibration (SBC) of a calibration mode's posterior.

If θ̃ ~ π(θ), ỹ ~ p(y | θ̃) and θ_1..θ_L are draws of the exact posterior p(θ | ỹ), the rank of θ̃ among
them, #{l : θ_l < θ̃}, is uniform on {0, ..., L} for every parameter; so is it for any inference whose
posteriors are right on average over the prior predictive. An over-confident posterior piles ranks at
both ends (∪), an under-confident one in the middle (∩), a biased one at one end; the central α
intervals of calibrated posteriors contain θ̃ in a fraction α of the data sets.

The study `sbc` (conf/experiment/sbc.yaml, section `sbc:`) runs it with the project's own stages: data
set i (`dataset_config`) has its own seed `stable_seed(seed, "sbc", i) mod 2^31` and a truth θ_i drawn from
the study's calibration prior with it; stage `observe` simulates its observations at θ_i, and stage
`calibrate` fits them as it fits any study (with `loss_weight: auto`, the point fit and stage
`loss_weight` first). `write_sbc` then ranks each θ_i among L = `sbc.rank_draws` posterior draws,
thinned evenly from the stored ones (`thin`: the flow's draws are independent, so thinning only
picks L of them; it matters for correlated samplers), notes whether θ_i lies in the central 50% and
90% intervals of all stored draws, and summarises per parameter (`sbc_summary`): the rank histogram in
`sbc.bins` bins of (L + 1) / bins ranks, the chi-square test of its uniformity, the coverage of both
intervals with its binomial standard error at the nominal level, and the posterior contraction
1 − Var_post / Var_prior on the unconstrained scale (a posterior equal to the prior passes SBC
trivially; contraction says how much the data taught).

References:
    Talts, Betancourt, Simpson, Vehtari & Gelman (2018), "Validating Bayesian inference algorithms with
    simulation-based calibration", arXiv:1804.06788.
    Schad, Betancourt & Vasishth (2021), "Toward a principled Bayesian workflow in cognitive science",
    Psychological Methods 26:103 (posterior contraction).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> truths = rng.normal(size=200)                                  # θ̃ ~ N(0, 1), no data:
    >>> ranks = [sbc_rank(t, rng.normal(size=99), rng) for t in truths]  # the posterior is the prior
    >>> table = pd.DataFrame({"parameter": "theta", "rank": ranks, "inside_50": False, "inside_90": False})
    >>> bool(sbc_summary(table, rank_draws=99, bins=10)["p_value"].iloc[0] > 0.01)
    True
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from diffabm.build import build_model
from diffabm.calibration.datasets import read_posterior
from diffabm.calibration.priors import Prior, build_prior
from diffabm.config import validate_config
from diffabm.models.base import Simulator, stable_seed
from diffabm.store import as_object_strings, atomic_write_text, read_dataset, write_dataset

log = logging.getLogger(__name__)
LEVELS = (0.5, 0.9)  # central posterior intervals whose coverage is measured
BAND = 0.99  # the rank histogram's band: each bin's count under uniform ranks (Talts et al. Fig. 2)
PRIOR_DRAWS = 100_000  # prior draws for the prior's variance in the contraction
SEED_MODULUS = 2**31  # data-set seeds fit every seeding API (Lightning's seed_everything takes < 2^32)


def sbc_settings(cfg: DictConfig) -> tuple[int, int, int]:
    """(datasets, rank_draws L, bins) of `cfg.sbc`, checked: (L + 1) ranks split evenly into the bins, and the
    flow stores at least L posterior draws."""
    settings = cfg.get("sbc")
    if settings is None:
        raise ValueError(f"study {cfg.study!r} has no `sbc:` section (datasets, rank_draws, bins)")
    datasets, rank_draws, bins = int(settings.datasets), int(settings.rank_draws), int(settings.bins)
    if datasets < 2 or rank_draws < 1 or bins < 1:
        raise ValueError(f"sbc: datasets must be >= 2, rank_draws and bins >= 1; got {datasets}, {rank_draws}, {bins}")
    if (rank_draws + 1) % bins:
        raise ValueError(f"sbc.bins={bins} must divide the rank_draws + 1 = {rank_draws + 1} possible ranks")
    stored = int(cfg.calibration.flow.posterior_draws)
    if stored < rank_draws:
        raise ValueError(f"sbc.rank_draws={rank_draws} exceeds calibration.flow.posterior_draws={stored}")
    return datasets, rank_draws, bins


def dataset_seed(seed: int, index: int) -> int:
    """The seed of data set `index`: its truth, its simulated observations and its calibration runs."""
    return stable_seed(int(seed), "sbc", int(index)) % SEED_MODULUS


def draw_truth(prior: Prior, model: Simulator, seed: int) -> dict[str, float]:
    """One natural-scale draw of the prior's parameters, reproducible from `seed`."""
    theta = prior.sample(1, stable_seed(seed, "sbc_truth"))[0]
    return {name: float(model.space.bijections[name](theta[i])) for i, name in enumerate(prior.names)}


def dataset_config(cfg: DictConfig, index: int, population=None) -> DictConfig:
    """The study's config for data set `index`: `seed` = `dataset_seed(seed, index)` and `truth` = a draw of the
    calibration prior with it (only the calibrated parameters; the others stay at `model.parameters`, as in
    calibration). Stages `observe`, `calibrate` and `loss_weight` take it as they take any study's config.
    `population`: population.zarr or a Population (None for a model without one)."""
    datasets, _, _ = sbc_settings(cfg)
    if not 0 <= int(index) < datasets:
        raise ValueError(
            f"sbc: data set {index} is not one of the study's sbc.datasets = {datasets} (0..{datasets - 1})"
        )
    model = build_model(cfg, population)
    prior = build_prior(OmegaConf.to_container(cfg.calibration.prior), model.space, model.device)
    seed = dataset_seed(cfg.seed, index)
    variant = cfg.copy()
    with read_write(variant), open_dict(variant):
        variant.seed = seed
        variant.truth = draw_truth(prior, model, seed)
        variant.pop("observed", None)  # a data set is simulated at its truth, never read from the study's record
    validate_config(OmegaConf.to_container(variant, resolve=True), f"study {cfg.study!r}, sbc data set {index}")
    return variant


def thin(draws: np.ndarray, rank_draws: int) -> np.ndarray:
    """`rank_draws` of the draws, evenly spaced (every ⌊n / L⌋-th from the first)."""
    draws = np.asarray(draws)
    if draws.shape[0] < rank_draws:
        raise ValueError(f"sbc: {draws.shape[0]} posterior draws, fewer than rank_draws = {rank_draws}")
    return draws[np.arange(rank_draws) * (draws.shape[0] // rank_draws)]


def sbc_rank(truth: float, draws: np.ndarray, rng: np.random.Generator) -> int:
    """#{l : draws_l < truth}, with draws equal to the truth counted below at random (Talts et al. §4.1):
    uniform on {0, ..., L} for a calibrated posterior even where draws tie with the truth."""
    draws = np.asarray(draws, dtype=float)
    below, ties = int((draws < truth).sum()), int((draws == truth).sum())
    return below + (int(rng.integers(0, ties + 1)) if ties else 0)


def central_interval(draws: np.ndarray, level: float) -> tuple[float, float]:
    """The central `level` interval of the draws (quantiles (1 − level)/2 and (1 + level)/2)."""
    return tuple(float(q) for q in np.quantile(np.asarray(draws, dtype=float), [(1 - level) / 2, (1 + level) / 2]))


def dataset_ranks(
    truth: Mapping[str, float], draws: Mapping[str, np.ndarray], rank_draws: int, seed: int
) -> list[dict]:
    """One row per parameter of `draws`: the truth, its rank among `thin(draws, rank_draws)`, whether it is inside
    the central 50% and 90% intervals of all draws, and the posterior's mean and 5, 25, 50, 75, 95% quantiles."""
    rng = np.random.default_rng(stable_seed(seed, "sbc_rank"))
    rows = []
    for name, values in draws.items():
        values = np.asarray(values, dtype=float)
        true = float(truth[name])
        row = {"parameter": name, "truth": true, "rank": sbc_rank(true, thin(values, rank_draws), rng)}
        for level in LEVELS:
            low, high = central_interval(values, level)
            row[f"inside_{round(100 * level)}"] = bool(low <= true <= high)
        row["mean"] = float(values.mean())
        row.update({f"q{round(100 * q):02d}": float(np.quantile(values, q)) for q in (0.05, 0.25, 0.5, 0.75, 0.95)})
        rows.append(row)
    return rows


def rank_histogram(ranks: Sequence[int], rank_draws: int, bins: int) -> np.ndarray:
    """Counts of ranks in {0..L} in `bins` bins of (L + 1) / bins consecutive ranks."""
    ranks = np.asarray(ranks, dtype=int)
    if (rank_draws + 1) % bins:
        raise ValueError(f"sbc: {bins} bins do not split the {rank_draws + 1} possible ranks evenly")
    if ranks.size and (ranks.min() < 0 or ranks.max() > rank_draws):
        raise ValueError(f"sbc: ranks must lie in 0..{rank_draws}, got {ranks.min()}..{ranks.max()}")
    return np.bincount(ranks // ((rank_draws + 1) // bins), minlength=bins)


def chi_square_uniformity(counts: Sequence[int]) -> tuple[float, float]:
    """Pearson's statistic Σ (n_b − N/B)² / (N/B) of bin counts against equal expected counts, and its p-value
    under χ²(B − 1) (asymptotic: with few data sets per bin it is approximate)."""
    counts = np.asarray(counts, dtype=float)
    expected = counts.sum() / counts.size
    statistic = float(((counts - expected) ** 2 / expected).sum())
    return statistic, chi_square_sf(statistic, counts.size - 1)


def chi_square_sf(x: float, df: int) -> float:
    """P(χ²_df ≥ x) = Q(df/2, x/2), the regularised upper incomplete gamma function."""
    if df < 1:
        return math.nan
    return float(
        torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64), torch.tensor(x / 2, dtype=torch.float64))
    )


def binomial_band(n: int, p: float, level: float = BAND) -> tuple[int, int]:
    """The central `level` interval of Binomial(n, p): the (1 − level)/2 and (1 + level)/2 quantiles."""
    k = torch.arange(n + 1, dtype=torch.float64)
    cdf = torch.distributions.Binomial(n, torch.tensor(p, dtype=torch.float64)).log_prob(k).exp().cumsum(0)
    low = int(torch.searchsorted(cdf, torch.tensor((1 - level) / 2, dtype=torch.float64)))
    high = int(torch.searchsorted(cdf, torch.tensor((1 + level) / 2, dtype=torch.float64)))
    return low, min(high, n)


def sbc_summary(ranks: pd.DataFrame, rank_draws: int, bins: int) -> pd.DataFrame:
    """Per parameter of `ranks` (columns parameter, rank, inside_50, inside_90): the number of data sets N, the
    rank histogram (`bin_0`..), its chi-square statistic and p-value, the 99% band of each bin's count under
    uniform ranks, and the coverage of the 50% and 90% intervals with its binomial standard error
    sqrt(α(1 − α)/N) at the nominal α and the z-score (coverage − α) / se."""
    rows = []
    for name, group in ranks.groupby("parameter", sort=False):
        counts = rank_histogram(group["rank"].to_numpy(), rank_draws, bins)
        statistic, p_value = chi_square_uniformity(counts)
        n = len(group)
        low, high = binomial_band(n, 1 / bins)
        row = {
            "parameter": name,
            "datasets": n,
            "rank_draws": rank_draws,
            "bins": bins,
            **{f"bin_{b}": int(c) for b, c in enumerate(counts)},
            "expected_per_bin": n / bins,
            "band99_low": low,
            "band99_high": high,
            "chi_square": statistic,
            "p_value": p_value,
        }
        for level in LEVELS:
            key = round(100 * level)
            coverage, se = float(group[f"inside_{key}"].mean()), math.sqrt(level * (1 - level) / n)
            row.update({f"coverage_{key}": coverage, f"se_{key}": se, f"z_{key}": (coverage - level) / se})
        rows.append(row)
    return pd.DataFrame(rows)


def contraction(cfg: DictConfig, model: Simulator, draws: Mapping[str, np.ndarray]) -> dict[str, float]:
    """1 − Var_post / Var_prior per parameter on the unconstrained scale (log, logit, ...)."""
    prior = build_prior(OmegaConf.to_container(cfg.calibration.prior), model.space, model.device)
    prior_variance = prior.sample(PRIOR_DRAWS, stable_seed(cfg.seed, "sbc_prior")).double().var(0)
    result = {}
    for i, name in enumerate(prior.names):
        values = torch.as_tensor(np.asarray(draws[name], dtype=np.float64))
        unconstrained = model.space.bijections[name].inv(values)
        result[name] = float(1 - unconstrained.var() / prior_variance[i])
    return result


def write_sbc(
    cfg: DictConfig,
    population,
    observed_paths: Sequence[str | Path],
    posterior_paths: Sequence[str | Path],
    output_path: str | Path,
    ranks_path: str | Path,
    summary_path: str | Path,
) -> Path:
    """Stage `sbc_ranks`: the ranks of the data sets' truths (`observed.zarr` attrs, data set i the i-th path) among
    their posteriors (`posterior.zarr`), written to `sbc.zarr` (with provenance: per data set and parameter the
    seed, truth, rank, interval flags, posterior quantiles and contraction; per parameter the summary) and as
    `ranks.csv` and `summary.csv`. `population`: population.zarr or a Population (for the parameter space)."""
    datasets, rank_draws, bins = sbc_settings(cfg)
    if not len(observed_paths) == len(posterior_paths) == datasets:
        raise ValueError(
            f"sbc: {len(observed_paths)} observed and {len(posterior_paths)} posterior stores for "
            f"sbc.datasets = {datasets}"
        )
    model = build_model(cfg, population)
    names = list(cfg.calibration.prior)
    rows = []
    for index, (observed_path, posterior_path) in enumerate(zip(observed_paths, posterior_paths)):
        truth = dict(read_dataset(observed_path).attrs.get("truth") or {})
        posterior = read_posterior(posterior_path)
        missing = [name for name in names if name not in truth or name not in posterior]
        if missing:
            raise ValueError(
                f"sbc data set {index}: parameter {missing[0]!r} is missing from the truth of "
                f"{observed_path} or the draws of {posterior_path}"
            )
        draws = {name: posterior[name].values for name in names}
        if posterior.sizes["draw"] < rank_draws:
            raise ValueError(
                f"sbc data set {index}: {posterior_path} has {posterior.sizes['draw']} draws, fewer than "
                f"sbc.rank_draws = {rank_draws}"
            )
        seed = dataset_seed(cfg.seed, index)
        shrink = contraction(cfg, model, draws)
        for row in dataset_ranks(truth, draws, rank_draws, seed):
            rows.append({"dataset": index, "seed": seed, **row, "contraction": shrink[row["parameter"]]})
    ranks = pd.DataFrame(rows)
    summary = sbc_summary(ranks, rank_draws, bins)
    summary["contraction"] = ranks.groupby("parameter", sort=False)["contraction"].mean().to_numpy()
    for row in summary.itertuples():
        log.info(
            "sbc %s: rank histogram %s (chi-square p = %.3g), coverage 50%% %.2f ± %.2f, 90%% %.2f ± %.2f, "
            "contraction %.2f",
            row.parameter,
            [getattr(row, f"bin_{b}") for b in range(bins)],
            row.p_value,
            row.coverage_50,
            row.se_50,
            row.coverage_90,
            row.se_90,
            row.contraction,
        )
    atomic_write_text(ranks_path, ranks.to_csv(index=False, float_format="%.6g"))
    atomic_write_text(summary_path, summary.to_csv(index=False, float_format="%.6g"))
    return write_dataset(sbc_dataset(ranks, summary, bins), output_path, cfg, int(cfg.seed))


def sbc_dataset(ranks: pd.DataFrame, summary: pd.DataFrame, bins: int) -> xr.Dataset:
    """The rank table as arrays (dataset, parameter) and the summary as arrays (parameter[, bin])."""
    per_dataset = ranks.set_index(["dataset", "parameter"])
    names = list(summary["parameter"])
    ds = xr.Dataset.from_dataframe(per_dataset.drop(columns="seed")).reindex(parameter=names)
    ds["seed"] = ("dataset", ranks.groupby("dataset")["seed"].first().to_numpy())
    ds["counts"] = (("parameter", "bin"), summary[[f"bin_{b}" for b in range(bins)]].to_numpy())
    for column in ("chi_square", "p_value", "coverage_50", "se_50", "coverage_90", "se_90", "contraction"):
        ds[f"summary_{column}"] = ("parameter", summary[column].to_numpy())
    ds = ds.assign_coords(parameter=as_object_strings(names), bin=np.arange(bins))
    ds.attrs.update(
        rank_draws=int(summary["rank_draws"].iloc[0]),
        bins=bins,
        datasets=int(summary["datasets"].iloc[0]),
        band99=[int(summary["band99_low"].iloc[0]), int(summary["band99_high"].iloc[0])],
    )
    return ds
