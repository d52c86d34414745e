"""Calibration: losses, priors and KL, each mode's training, exact resume, divergence errors."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from diffabm.calibration.flow import kl_estimate
from diffabm.calibration.losses import log_mse, mmd_squared
from diffabm.calibration.observe import observe
from diffabm.calibration.priors import build_prior
from diffabm.config import ConfigError, compose_study
from diffabm.parameters import ParameterSpace
from diffabm.population.toy import toy_population
from diffabm.store import read_dataset, write_dataset

TINY = [
    "population=toy",
    "population.n_agents=500",
    "model.days=20",
    "truth.initial_fraction=0.03",
    "interventions.0.start=10",
    "interventions.0.end=15",  # the default study's school closure, within 20 days
    "calibration.loggers=[csv]",
    "calibration.progress_bar=false",
    # a prior near the truth's I0
    "calibration.prior.initial_fraction.concentration0=30",
    # start well below the true contact rates (truth: 2, 4, 2.5, 1.5)
    *(f"calibration.prior.beta_{layer}.loc=-0.5" for layer in ("household", "school", "workplace", "community")),
]


def test_log_mse_is_the_squared_error_of_log_counts():
    simulated, observed = torch.tensor([[0.0, 9.0], [3.0, 1.0]]), torch.tensor([1.0, 2.0])
    expected = [math.log(1 / 2) ** 2 + math.log(10 / 3) ** 2, math.log(4 / 2) ** 2 + math.log(2 / 3) ** 2]
    assert torch.allclose(log_mse(simulated, observed), torch.tensor(expected))


def test_mmd_matches_a_direct_computation():
    generator = torch.Generator().manual_seed(0)
    simulated = torch.randint(0, 50, (3, 7), generator=generator).float()
    observed = torch.randint(0, 50, (6,), generator=generator).float()
    y = np.log1p(observed.numpy().astype(float))
    bandwidth = np.median([abs(a - b) for i, a in enumerate(y) for j, b in enumerate(y) if i != j])

    def k(a, b):
        return math.exp(-((a - b) ** 2) / (2 * bandwidth**2))

    for row, value in zip(simulated, mmd_squared(simulated, observed)):
        x = np.log1p(row.numpy().astype(float))
        xx = np.mean([k(a, b) for i, a in enumerate(x) for j, b in enumerate(x) if i != j])
        yy = np.mean([k(a, b) for i, a in enumerate(y) for j, b in enumerate(y) if i != j])
        xy = np.mean([k(a, b) for a in x for b in y])
        assert value.item() == pytest.approx(xx + yy - 2 * xy, abs=1e-5)


def test_mmd_of_identical_samples_is_near_zero_and_grows_with_a_shift():
    observed = torch.arange(40.0)
    assert mmd_squared(observed[None], observed).abs().item() < 0.05
    assert mmd_squared(observed[None] * 5, observed).item() > 0.3


def test_flow_kl_estimate_matches_the_closed_form_for_gaussians():
    """LogNormal priors are Normal on the log scale: the Monte-Carlo KL must match the closed form."""
    space = ParameterSpace({"beta_a": "positive", "beta_b": "positive"})
    prior = build_prior(
        {
            "beta_a": {"distribution": "LogNormal", "loc": 0.5, "scale": 1.0},
            "beta_b": {"distribution": "LogNormal", "loc": -1.0, "scale": 0.5},
        },
        space,
    )
    q_loc, q_scale = torch.tensor([0.2, -0.7], requires_grad=True), torch.tensor([0.3, 0.8])
    q = torch.distributions.Independent(torch.distributions.Normal(q_loc, q_scale), 1)
    p_loc, p_scale = torch.tensor([0.5, -1.0]), torch.tensor([1.0, 0.5])
    closed = (torch.log(p_scale / q_scale) + (q_scale**2 + (q_loc - p_loc) ** 2) / (2 * p_scale**2) - 0.5).sum()
    torch.manual_seed(0)
    estimate, theta = kl_estimate(q, prior, 200_000)
    assert theta.shape == (200_000, 2)
    assert estimate.item() == pytest.approx(closed.item(), abs=0.01)
    (gradient,) = torch.autograd.grad(estimate, q_loc)
    (closed_gradient,) = torch.autograd.grad(closed, q_loc)
    assert torch.allclose(gradient, closed_gradient, atol=0.02)


def test_sticking_the_landing_keeps_the_kl_gradient_mean_and_has_no_variance_where_q_is_the_prior():
    space = ParameterSpace({"beta_a": "positive", "beta_b": "positive"})
    prior = build_prior(
        {
            "beta_a": {"distribution": "LogNormal", "loc": 0.5, "scale": 1.0},
            "beta_b": {"distribution": "LogNormal", "loc": -1.0, "scale": 0.5},
        },
        space,
    )

    def gradients(loc: list[float], scale: list[float], n: int, seed: int, path: bool) -> torch.Tensor:
        q_loc, q_scale = torch.tensor(loc, requires_grad=True), torch.tensor(scale, requires_grad=True)
        q = torch.distributions.Independent(torch.distributions.Normal(q_loc, q_scale), 1)
        detached = torch.distributions.Independent(torch.distributions.Normal(q_loc.detach(), q_scale.detach()), 1)
        torch.manual_seed(seed)
        estimate, _ = kl_estimate(q, prior, n, detached.log_prob if path else None)
        return torch.cat(torch.autograd.grad(estimate, (q_loc, q_scale)))

    # KL(N(m, s) ‖ N(p, r)) per coordinate: d/dm = (m − p) / r², d/ds = −1/s + s / r²
    closed = torch.tensor([(0.2 - 0.5) / 1.0, (-0.7 + 1.0) / 0.25, -1 / 0.3 + 0.3 / 1.0, -1 / 0.8 + 0.8 / 0.25])
    assert torch.allclose(gradients([0.2, -0.7], [0.3, 0.8], 200_000, 0, path=True), closed, atol=0.02)
    at_prior = [gradients([0.5, -1.0], [1.0, 0.5], 4, seed, path) for seed in range(5) for path in (True, False)]
    assert all(torch.allclose(g, torch.zeros(4), atol=1e-5) for g in at_prior[0::2])
    assert min(g.abs().max().item() for g in at_prior[1::2]) > 0.01


def test_prior_density_on_the_unconstrained_scale_includes_the_jacobian():
    space = ParameterSpace({"initial_fraction": "unit_interval"})
    prior = build_prior({"initial_fraction": {"distribution": "Uniform", "low": 0.0, "high": 1.0}}, space)
    z = torch.linspace(-4, 4, 9)[:, None]
    logistic = torch.distributions.TransformedDistribution(
        torch.distributions.Uniform(0.0, 1.0), [torch.distributions.SigmoidTransform().inv]
    )
    assert torch.allclose(prior.log_prob(z), logistic.log_prob(z[:, 0]), atol=1e-5)
    assert torch.exp(prior.log_prob(torch.linspace(-30, 30, 20001)[:, None])).sum() * 60 / 20000 == pytest.approx(
        1.0, abs=1e-3
    )


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, Path]:
    """A 500-agent, 20-day toy study with observations at its truth: (population, observed) paths."""
    root = tmp_path_factory.mktemp("calibration")
    cfg = compose_study("default", TINY)
    population = write_dataset(toy_population(500, seed=3).to_dataset(), root / "population.zarr", cfg, 3)
    return population, observe(cfg, population, root / "observed.zarr")


def target_and_prior(cfg, study, observed=None):
    """The calibration target and prior of the tiny study (observed data: its store, or a dataset as given)."""
    from diffabm.build import build_model
    from diffabm.calibration.setup import build_target

    return build_target(cfg, build_model(cfg, study[0]), read_dataset(study[1]) if observed is None else observed)


def expected_loss(target, theta: torch.Tensor, module=None, repeats: int = 12) -> float:
    """Mean loss of θ (d,) (with `module`'s daily β multiplier, if any) over `repeats` draws, fixed seed."""
    with torch.no_grad():
        controls = None if module is None else module.controls(repeats)
        return target.losses(theta.expand(repeats, -1), 12345, controls).mean().item()


@pytest.mark.parametrize(
    "mode, overrides",
    [
        ("point", ["calibration.point.epochs=12", "calibration.point.lr=0.05"]),
        ("ensemble", ["calibration.ensemble.epochs=12", "calibration.ensemble.lr=0.05"]),
        (
            "calibnn",
            [
                "calibration.calibnn.epochs=12",
                "calibration.calibnn.lr=0.01",
                "calibration.calibnn.control=transmission_multiplier",
            ],
        ),
        (
            "calibnn",
            [
                "calibration.calibnn.epochs=12",
                "calibration.calibnn.lr=0.01",
                "calibration.calibnn.control=transmission_by_region",
                "calibration.observables=[infections_by_region]",
            ],
        ),
        ("point", ["calibration.point.epochs=12", "calibration.point.lr=0.05", "calibration.gradients=stochastic"]),
    ],
)
def test_point_like_modes_lower_the_loss(study, tmp_path, mode, overrides):
    import lightning as L

    from diffabm.calibration.setup import build_module
    from diffabm.calibration.training import train

    cfg = compose_study("default", [*TINY, *overrides])
    target, prior = target_and_prior(cfg, study)
    L.seed_everything(1, verbose=False)
    initial = build_module(mode, cfg.calibration[mode], target, prior, seed=1)
    trained = train(cfg, mode, target, prior, tmp_path, seed=1, run_name="test")
    before, after = (module.posterior_draws(1, 0)[0] for module in (initial, trained))
    assert expected_loss(target, after, trained) < expected_loss(target, before, initial)
    assert (tmp_path / "metrics.csv").exists() and (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_the_flows_detached_density_passes_gradients_to_the_draws_only(study):
    from diffabm.calibration.setup import build_module

    cfg = compose_study("default", [*TINY, "calibration.flow.loss_weight=1", "calibration.flow.transforms=2"])
    target, prior = target_and_prior(cfg, study)
    module = build_module("flow", cfg.calibration.flow, target, prior, seed=1)
    theta = module.posterior_draws(3, 0).requires_grad_()
    detached, full = module.detached_log_density(theta).sum(), module(theta).sum()
    assert detached.item() == pytest.approx(full.item())
    parameters = list(module.parameters())
    assert all(g is None for g in torch.autograd.grad(detached, [*parameters], retain_graph=True, allow_unused=True))
    assert any(g.abs().sum() > 0 for g in torch.autograd.grad(full, parameters, retain_graph=True))
    assert torch.allclose(torch.autograd.grad(detached, theta)[0], torch.autograd.grad(full, theta)[0])


@pytest.mark.parametrize("estimator, kl_gradient", [("pathwise", "total"), ("score", "total"), ("pathwise", "path")])
def test_flow_lowers_the_expected_loss(study, tmp_path, estimator, kl_gradient):
    import lightning as L

    from diffabm.calibration.setup import build_module
    from diffabm.calibration.training import train

    cfg = compose_study(
        "default",
        [
            *TINY,
            "calibration.flow.epochs=15",
            "calibration.flow.lr=0.03",
            "calibration.flow.loss_weight=10",
            "calibration.flow.transforms=2",
            f"calibration.flow.estimator={estimator}",
            f"calibration.flow.kl_gradient={kl_gradient}",
        ],
    )
    target, prior = target_and_prior(cfg, study)

    def mean_loss(module) -> float:
        with torch.no_grad():
            return target.losses(module.posterior_draws(24, seed=5), seed=12345).mean().item()

    L.seed_everything(1, verbose=False)
    before = mean_loss(build_module("flow", cfg.calibration.flow, target, prior, seed=1))
    after = mean_loss(train(cfg, "flow", target, prior, tmp_path, seed=1, run_name="test"))
    assert after < before


@pytest.mark.parametrize("mode", ["forward", "checkpointed"])
def test_ad_modes_give_the_reverse_mode_flow_gradient(study, mode):
    """∇_φ E_q[ℓ] (pathwise) with the simulator differentiated in forward mode or checkpointed reverse mode equals
    plain reverse mode for the same draws and seed (checkpointed: exactly)."""
    from diffabm.calibration.estimators import pathwise
    from diffabm.models.autodiff import AutoDiff

    cfg = compose_study(
        "default",
        [
            *TINY,
            "model/estimator=gumbel_softmax",
            "model.estimator.temperature=0.5",
            f"ad.mode={mode}",
            "ad.segment_days=3",
        ],
    )
    target, _ = target_and_prior(cfg, study)
    assert target.ad == AutoDiff(mode, 3)
    loc = torch.tensor([0.5, 0.5, 0.5, 0.5, -3.5], requires_grad=True)
    q = torch.distributions.Independent(torch.distributions.Normal(loc, 0.1), 1)
    torch.manual_seed(0)
    theta = q.rsample((3,))
    gradients = []
    for ad in (AutoDiff("reverse"), target.ad):
        target.ad = ad
        gradients.append(
            torch.autograd.grad(pathwise(theta, q, lambda t: target.losses(t, 7))[0], loc, retain_graph=True)[0]
        )
    if mode == "checkpointed":
        assert torch.equal(gradients[0], gradients[1])
    assert torch.allclose(gradients[0], gradients[1], rtol=1e-3, atol=1e-4)


def kill_at_epoch(monkeypatch, module_class: type, epoch: int, run) -> None:
    """Run `run()` with `module_class` raising KeyboardInterrupt (a kill) at the start of `epoch`."""

    def killed(module) -> None:
        if module.current_epoch == epoch:
            raise KeyboardInterrupt("killed")

    with monkeypatch.context() as patch:
        patch.setattr(module_class, "on_train_epoch_start", killed, raising=False)
        with pytest.raises((KeyboardInterrupt, SystemExit)):
            run()


def test_a_killed_or_extended_run_ends_like_an_uninterrupted_one_with_an_annealed_loss_weight(
    study, tmp_path, monkeypatch
):
    """Run 2 epochs, raise to 5 and kill at the start of epoch 4, rerun: the result of 5 epochs at once."""
    from diffabm.calibration.flow import FlowCalibration
    from diffabm.calibration.stage import calibrate

    def run(run_dir: Path, epochs: int):
        cfg = compose_study(
            "default",
            [
                *TINY,
                f"calibration.flow.epochs={epochs}",
                "calibration.flow.transforms=2",
                "calibration.flow.steps_per_epoch=2",
                "calibration.fit_draws=2",
                "calibration.flow.loss_weight=1",
                "calibration.flow.loss_weight_warmup=4",
            ],
        )
        calibrate(cfg, "flow", *study, run_dir, resume=True)  # as Snakemake's retries (attempt > 1) do
        return read_dataset(run_dir / "posterior.zarr")

    short = run(tmp_path / "resumed", 2)
    kill_at_epoch(monkeypatch, FlowCalibration, 4, lambda: run(tmp_path / "resumed", 5))
    checkpoint = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 8  # the kill lost nothing but the epoch it interrupted
    resumed = run(tmp_path / "resumed", 5)
    uninterrupted = run(tmp_path / "uninterrupted", 5)
    assert not short.equals(uninterrupted)
    for name in uninterrupted.data_vars:
        np.testing.assert_array_equal(resumed[name].values, uninterrupted[name].values)
    metrics = pd.read_csv(tmp_path / "resumed" / "metrics.csv")
    assert sorted(metrics["step"].unique()) == list(range(10))
    warmup = metrics.dropna(subset=["loss_weight_step"]).sort_values("step")["loss_weight_step"]
    assert warmup.tolist() == pytest.approx([0.25, 0.5, 0.75, 1, 1, 1, 1, 1, 1, 1])  # annealed w, resumed mid-way


def test_a_cosine_learning_rate_decays_to_zero_survives_a_kill_and_restarts_when_the_epochs_change(
    study, tmp_path, monkeypatch
):
    """lr_k = lr · ½(1 + cos(πk/K)) across a kill; a run of other length cannot reuse the checkpoint."""
    from diffabm.calibration.point import PointCalibration
    from diffabm.calibration.stage import calibrate

    def run(run_dir: Path, epochs: int):
        cfg = compose_study(
            "default",
            [
                *TINY,
                f"calibration.point.epochs={epochs}",
                "calibration.point.lr=0.05",
                "calibration.point.lr_schedule=cosine",
                "calibration.fit_draws=2",
            ],
        )
        calibrate(cfg, "point", *study, run_dir, resume=True)
        return read_dataset(run_dir / "posterior.zarr")

    kill_at_epoch(monkeypatch, PointCalibration, 3, lambda: run(tmp_path / "resumed", 6))
    resumed, uninterrupted = run(tmp_path / "resumed", 6), run(tmp_path / "uninterrupted", 6)
    for name in uninterrupted.data_vars:
        np.testing.assert_array_equal(resumed[name].values, uninterrupted[name].values)
    rates = pd.read_csv(tmp_path / "resumed" / "metrics.csv").dropna(subset=["lr-AdamW"]).sort_values("step")
    assert rates["step"].tolist() == list(range(6))
    assert rates["lr-AdamW"].tolist() == pytest.approx([0.05 * (1 + math.cos(math.pi * k / 6)) / 2 for k in range(6)])
    longer, fresh = run(tmp_path / "resumed", 8), run(tmp_path / "fresh", 8)
    for name in fresh.data_vars:
        np.testing.assert_array_equal(longer[name].values, fresh[name].values)


@pytest.mark.parametrize(
    "override, field",
    [
        ("calibration.point.lr_schedule=linear", "calibration.point.lr_schedule"),
        ("calibration.flow.loss_weight=-1", "calibration.flow.loss_weight"),
        ("calibration.flow.loss_weight_warmup=-5", "calibration.flow.loss_weight_warmup"),
        ("calibration.flow.kl_gradient=score", "calibration.flow.kl_gradient"),
    ],
)
def test_a_bad_calibration_setting_fails_at_composition(override, field):
    with pytest.raises(ConfigError, match=f"config field '{field}'"):
        compose_study("default", [*TINY, override])


def test_a_nan_loss_stops_with_the_step_and_parameters(study, tmp_path):
    from diffabm.calibration.module import CalibrationDiverged
    from diffabm.calibration.training import train

    cfg = compose_study("default", TINY)
    observed = read_dataset(study[1])
    observed["new_infections"][3] = np.nan
    target, prior = target_and_prior(cfg, study, observed)
    with pytest.raises(CalibrationDiverged, match=r"step 0: loss is nan; parameters: beta_household=\["):
        train(cfg, "point", target, prior, tmp_path, seed=1, run_name="test")


def test_replicated_losses_compare_the_mean_of_the_replicates(study):

    cfg = compose_study("default", [*TINY, "calibration.replicates=3"])
    target, prior = target_and_prior(cfg, study)
    theta = prior.sample(2, 0)
    output = target.simulate(theta.repeat_interleave(3, dim=0), 5)
    means = {}
    for name, series in output.items():
        means[name] = series.reshape(2, 3, *series.shape[1:]).mean(1)
    torch.testing.assert_close(target.losses(theta, 5), target.loss(means))


def test_calibnn_weekly_features_lag_the_data_and_multipliers_are_centred(study):
    from diffabm.calibration.calibnn import (
        CalibNNCalibration,
        observed_series,
        weekly_features,
    )

    cfg = compose_study("default", TINY)
    target, _ = target_and_prior(cfg, study)
    series, features = observed_series(target), weekly_features(target)
    assert features.shape[0] == 3  # 20 days
    assert torch.equal(features[0, :-1], torch.zeros_like(features[0, :-1])), "week 0 has no past week"
    assert torch.equal(features[1, :-1], series[:7].flatten()), "week 1 sees week 0"
    module = CalibNNCalibration(
        target,
        torch.zeros(target.dimension),
        seed=0,
        draws_per_step=2,
        steps_per_epoch=1,
        lr=0.01,
        control="transmission_multiplier",
    )
    torch.nn.init.normal_(module.weekly_network[-1].weight)
    daily = module.controls(2)["transmission_multiplier"]
    assert daily.shape == (2, 20) and not torch.allclose(daily, torch.ones_like(daily))
    weekly = daily[0, ::7]
    assert torch.log(weekly).mean().item() == pytest.approx(0.0, abs=1e-5)
    assert torch.equal(daily[0, :7], daily[0, :1].expand(7))


def test_calibnn_per_group_features_hold_exogenous_inputs_lagged_data_and_no_held_out_data(tmp_path):
    """Per region and week: the interventions and coverage, the region's series of the week before (in held-out
    weeks the last fitted week's), and a one-hot code; the control is (draws, days, regions), centred."""
    from diffabm.calibration.calibnn import CalibNNCalibration, group_week_features

    cfg = compose_study(
        "default", [*TINY, "calibration.observables=[infections_by_region]", "calibration.holdout_days=7"]
    )
    population = toy_population(600, seed=3, area_size=100, areas_per_region=2)  # 3 regions
    population_path = write_dataset(population.to_dataset(), tmp_path / "population.zarr", cfg, 3)
    target, _ = target_and_prior(cfg, (population_path, observe(cfg, population_path, tmp_path / "observed.zarr")))
    features = group_week_features(target, "transmission_by_region")
    regions = len(target.model.coords()["region"])
    exogenous = target.model.exogenous_features("region").shape[-1]
    assert features.shape == (3, regions, exogenous + 1 + regions)
    lagged = features[..., exogenous]
    assert torch.equal(lagged[0], lagged[0, :1].expand(regions)), "week 0 has no past week"
    assert not torch.equal(lagged[1], lagged[0]), "week 1 sees week 0"
    assert torch.equal(lagged[2], lagged[1]), "days 14-19 are held out: week 2 sees no data of week 1's end"
    assert torch.equal(features[0, :, -regions:], torch.eye(regions))
    module = CalibNNCalibration(
        target,
        torch.zeros(target.dimension),
        seed=0,
        draws_per_step=2,
        steps_per_epoch=1,
        lr=0.01,
        control="transmission_by_region",
    )
    torch.nn.init.normal_(module.weekly_network[-1].weight)
    daily = module.controls(2)["transmission_by_region"]
    assert daily.shape == (2, 20, regions)
    assert torch.log(daily[0, ::7]).mean().item() == pytest.approx(0.0, abs=1e-5)
    assert not torch.allclose(daily[0, 0], daily[0, 0, :1].expand(regions)), "regions get their own transmission"


def test_loss_weight_recovers_the_scale_and_degrees_of_freedom_of_a_chi_square():
    from diffabm.calibration.weight import loss_weight

    scale, degrees = 0.3, 50
    losses = scale * torch.distributions.Chi2(torch.tensor(float(degrees))).sample((20_000,))
    weight, effective = loss_weight(losses)
    assert weight == pytest.approx(1 / (2 * scale), rel=0.05)
    assert effective == pytest.approx(degrees, rel=0.05)


def test_loss_weight_stage_writes_the_weight_that_an_auto_flow_reads(study, tmp_path, capsys):
    import json

    from diffabm.calibration.datasets import posterior_dataset
    from diffabm.calibration.stage import with_loss_weight
    from diffabm.calibration.weight import bootstrap_losses
    from diffabm.cli import main

    cfg = compose_study("default", TINY)
    observed = read_dataset(study[1])
    target, prior = target_and_prior(cfg, study, observed)
    with pytest.raises(ValueError, match="at least 2 synthetic data sets"):
        bootstrap_losses(target, prior.sample(1, 0)[0], 1, seed=0)
    posterior = write_dataset(
        posterior_dataset(target, prior.sample(8, 0), "point", observed), tmp_path / "posterior.zarr", cfg, 0
    )
    paths = ["--population", str(study[0]), "--observed", str(study[1]), "--posterior", str(posterior)]
    assert main(["loss-weight", *paths, *TINY]) == 0
    assert "calibration.flow.loss_weight ≈" in capsys.readouterr().out
    assert main(["loss-weight", *paths, "--output", str(tmp_path / "w.json"), *TINY]) == 0
    estimate = json.loads((tmp_path / "w.json").read_text())
    assert estimate["loss_weight"] == pytest.approx(estimate["loss_mean"] / estimate["loss_variance"])
    assert {"git_commit", "config", "seed"} <= set(estimate)

    assert cfg.calibration.flow.loss_weight == "auto"
    assert with_loss_weight(cfg, "flow", tmp_path / "w.json").calibration.flow.loss_weight == estimate["loss_weight"]
    with pytest.raises(ValueError, match="'auto' needs the file written by the loss_weight stage"):
        with_loss_weight(cfg, "flow", None)
    (tmp_path / "bad.json").write_text(json.dumps({"loss_weight": -0.5}))
    with pytest.raises(ValueError, match=r"bad.json: loss_weight must be a positive number, got -0.5"):
        with_loss_weight(cfg, "flow", tmp_path / "bad.json")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ([], "loss_weight must be a positive number .or auto., got 'auto'"),  # auto, never resolved
    ],
)
def test_flow_rejects_a_bad_setting(study, overrides, message):
    from diffabm.calibration.setup import build_module

    cfg = compose_study("default", [*TINY, *overrides])
    target, prior = target_and_prior(cfg, study)
    with pytest.raises(ValueError, match=message):
        build_module("flow", cfg.calibration.flow, target, prior, seed=0)


def test_merged_ensemble_keeps_each_member_as_a_chain(study, tmp_path):
    import pandas as pd

    from diffabm.calibration.datasets import posterior_dataset
    from diffabm.calibration.ensemble import merge_ensemble

    cfg = compose_study("default", [*TINY, "calibration.fit_draws=2"])
    observed = read_dataset(study[1])
    target, prior = target_and_prior(cfg, study, observed)
    members = []
    for k in range(2):
        (tmp_path / str(k)).mkdir()
        pd.DataFrame({"step": [0], "loss": [1.0]}).to_csv(tmp_path / str(k) / "metrics.csv", index=False)
        members.append(
            write_dataset(
                posterior_dataset(target, prior.sample(1, k), "point", observed),
                tmp_path / str(k) / "posterior.zarr",
                cfg,
                k,
            )
        )
    merged = read_dataset(
        merge_ensemble(
            cfg,
            members,
            study[0],
            study[1],
            tmp_path / "posterior.zarr",
            tmp_path / "fit.zarr",
            tmp_path / "metrics.csv",
        )
    )
    assert sorted(merged.data_vars) == sorted(target.names)
    assert merged["chain"].values.tolist() == [0, 1] and merged.sizes["draw"] == 1
    for k, member in enumerate(members):
        assert (merged.isel(chain=k)[target.names[0]].values == read_dataset(member)[target.names[0]].values[0]).all()


@pytest.mark.parametrize(
    "overrides",
    [[], ["calibration.replicates=2", "calibration.alternatives=2", "calibration.observables=[infections_by_setting]"]],
)
def test_stochastic_gradients_reach_theta_through_the_bijections(study, overrides):
    """The surrogate's gradient in θ (unconstrained) is the model's stochastic derivative in the natural parameters
    times d natural / d θ, with the target's replicates and alternatives."""
    cfg = compose_study("default", [*TINY, "calibration.gradients=stochastic", *overrides])
    target, prior = target_and_prior(cfg, study)
    theta = prior.sample(3, 0).requires_grad_(True)
    losses = target.losses(theta, 7)
    (gradient,) = torch.autograd.grad(losses.sum(), theta)
    natural = target.natural(theta.detach())
    values, estimates = target.model.derivative_estimates(
        natural,
        7,
        lambda output: target.loss({name: output[name] for name in target.loss.observed}),
        target.names,
        target.alternatives,
        target.replicates,
    )
    torch.testing.assert_close(losses.detach(), values)
    chain = torch.stack(
        [
            torch.autograd.functional.jacobian(target.model.space.bijections[name], theta[:, k].detach()).diagonal()
            for k, name in enumerate(target.names)
        ],
        -1,
    )
    torch.testing.assert_close(gradient, estimates * chain)
    with torch.no_grad():
        torch.testing.assert_close(losses.detach(), target.losses(theta, 7))  # the loss is the plain loss


def test_finite_difference_gradients_are_central_differences_with_common_random_numbers(study):
    """calibration.gradients: finite_differences: the surrogate's value is the plain loss and its gradient the central
    difference in each unconstrained coordinate with the same seed; controls are refused, as for stochastic."""
    cfg = compose_study(
        "default",
        [*TINY, "calibration.gradients=finite_differences", "calibration.step=0.1", "calibration.replicates=2"],
    )
    target, prior = target_and_prior(cfg, study)
    theta = prior.sample(3, 0).requires_grad_(True)
    losses = target.losses(theta, 7)
    (gradient,) = torch.autograd.grad(losses.sum(), theta)
    with torch.no_grad():
        torch.testing.assert_close(losses.detach(), target.losses(theta, 7))
        for k in range(target.dimension):
            shift = 0.1 * torch.eye(target.dimension)[k]
            expected = (target.losses(theta + shift, 7) - target.losses(theta - shift, 7)) / 0.2
            torch.testing.assert_close(gradient[:, k], expected)
    with pytest.raises(ValueError, match="takes no controls"):
        target.losses(theta, 7, {"transmission_multiplier": torch.ones(3, cfg.model.days)})


def test_posterior_stores_are_read_by_arviz_as_they_are_and_flat_by_read_posterior(study, tmp_path):
    """posterior.zarr carries (chain, draw): ArviZ converts and summarises it unchanged; `read_posterior` gives
    the draws flat, chain by chain."""
    import arviz
    import xarray as xr

    from diffabm.calibration.datasets import posterior_dataset, read_posterior

    cfg = compose_study("default", TINY)
    target, prior = target_and_prior(cfg, study)
    theta = prior.sample(40, 0)
    path = write_dataset(
        posterior_dataset(target, theta, "flow", read_dataset(study[1])), tmp_path / "posterior.zarr", cfg, 0
    )
    data = arviz.convert_to_inference_data(xr.open_zarr(path, consolidated=False))
    table = arviz.summary(data, kind="stats")
    assert sorted(table.index) == sorted(target.names) and (table["sd"] > 0).all()
    flat = read_posterior(path)
    assert flat.sizes == {"draw": 40}
    torch.testing.assert_close(
        torch.as_tensor(flat[target.names[0]].values),
        target.natural(theta)[target.names[0]].double(),
        check_dtype=False,
    )


def test_wandb_runs_are_grouped_by_study_tagged_by_mode_and_one_per_job(tmp_path, monkeypatch):
    """The W&B logger of a run: group = study, tags = (study, mode), id = the run's name, so a rerun of the job
    resumes that run instead of adding one (offline: no network)."""
    from diffabm.build import build_loggers

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_study("default", [*TINY, "calibration.loggers=[csv,wandb]"])
    _, logger = build_loggers(cfg, tmp_path, "default-flow", "flow")
    settings = logger._wandb_init
    assert (settings["group"], settings["tags"], settings["job_type"]) == ("default", ["default", "flow"], "flow")
    assert settings["id"] == "default-flow" and settings["resume"] == "allow"


def test_an_offline_wandb_run_holds_the_metrics_and_the_resolved_config(study, tmp_path, monkeypatch):
    """W&B offline (the default): the job's run ends with the job, and its run file (W&B's protobuf records,
    uploaded later by `wandb sync`) holds the resolved config and the logged metrics."""
    from diffabm.calibration.training import train

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_study("default", [*TINY, "calibration.loggers=[csv,wandb]", "calibration.point.epochs=2"])
    target, prior = target_and_prior(cfg, study)
    train(cfg, "point", target, prior, tmp_path, seed=1, run_name="default-point")
    (records,) = (tmp_path / "wandb").glob("offline-run-*-default-point/run-default-point.wandb")
    expected = (
        b"study",
        b'"default"',
        b"calibration",
        b"holdout_days",  # the config, as JSON values
        b"loss_epoch",
        b"parameter/beta_household",  # the metrics
    )
    deadline = time.monotonic() + 60  # W&B's service process may still be writing the file when `finish` returns
    while not all(part in records.read_bytes() for part in expected) and time.monotonic() < deadline:
        time.sleep(0.5)
    data = records.read_bytes()
    for part in expected:
        assert part in data, part
