"""Brock & Hommes model (values, gradient horizon, simulator interface) and the gradient-variance study
of Quera-Bofarull, Dyer et al. 2023 (Figs. 2 and 6)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch.distributions import Independent, Normal

from diffabm.calibration.priors import Prior
from diffabm.figures.gradient_horizon import (
    plot_gradient_boxplots,
    plot_gradient_spread,
)
from diffabm.models.base import stable_seed
from diffabm.models.brock_hommes import BrockHommes, simulate_series
from diffabm.studies.gradient_horizon import (
    diagonal_gaussian_estimates,
    flow_gradient_spread,
    initial_flow,
    loss_of_draws,
)

PAPER = {"g2": 0.9, "g3": 0.9, "b2": 0.2, "b3": -0.2, "beta": 120.0, "sigma": 0.04, "R": 1.01}
TRUTH = (0.9, 0.9, 0.2, -0.2)
OTHER = {"theta": (0.5, 1.2, -0.3, 0.4), "beta": 10.0, "sigma": 0.1, "R": 1.05}
ROOT = Path(__file__).resolve().parents[1]


def step(x1: float, x2: float, x3: float, theta, eps: float, beta=120.0, sigma=0.04, R=1.01) -> float:
    """The one-step map x_t = f(x_{t-1}, x_{t-2}, x_{t-3}, θ, ε_t) in plain Python floats."""
    g2, g3, b2, b3 = theta
    g, b = (0.0, g2, g3, 1.01), (0.0, b2, b3, 0.0)
    exponents = [beta * (x1 - R * x2) * (gj * x3 + bj - R * x2) for gj, bj in zip(g, b)]
    top = max(exponents)
    weights = [math.exp(a - top) for a in exponents]
    total = sum(weights)
    return (sum(w / total * (gj * x1 + bj) for w, gj, bj in zip(weights, g, b)) + sigma * eps) / R


def plain_series(theta, eps, beta=120.0, sigma=0.04, R=1.01) -> list[float]:
    xs = [0.0, 0.0, 0.0]  # x_{-2}, x_{-1}, x_0
    for e in eps:
        xs.append(step(xs[-1], xs[-2], xs[-3], theta, e, beta, sigma, R))
    return xs[3:]


def first_three_by_hand(theta, e, beta, sigma, R) -> list[float]:
    """x_1..x_3 from the equations with x_0 = x_{-1} = x_{-2} = 0 written out (paper Appendix B.1)."""
    g2, g3, b2, b3 = theta
    g, b = (0.0, g2, g3, 1.01), (0.0, b2, b3, 0.0)

    def softmax(a):
        w = [math.exp(v) for v in a]
        return [v / sum(w) for v in w]

    x1 = (sum(b) / 4 + sigma * e[0]) / R  # U = 0: equal shares
    n2 = softmax([beta * x1 * bj for bj in b])  # U_j = (x1 - 0)(0 + b_j - 0)
    x2 = (sum(n * (gj * x1 + bj) for n, gj, bj in zip(n2, g, b)) + sigma * e[1]) / R
    n3 = softmax([beta * (x2 - R * x1) * (bj - R * x1) for bj in b])  # x_{t-3} = x_0 = 0
    x3 = (sum(n * (gj * x2 + bj) for n, gj, bj in zip(n3, g, b)) + sigma * e[2]) / R
    return [x1, x2, x3]


def fixed_eps(draws: int, steps: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(draws, steps, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def two_draws():
    """θ and auxiliaries (β, σ, R) for two draws: the paper's setting and another one."""
    theta = torch.tensor([TRUTH, OTHER["theta"]], dtype=torch.float64)
    beta, sigma, R = (torch.tensor([PAPER[k], OTHER[k]], dtype=torch.float64) for k in ("beta", "sigma", "R"))
    return theta, beta, sigma, R


# --- model values ------------------------------------------------------------------------------------------------


def test_first_three_steps_match_hand_computation():
    theta, beta, sigma, R = two_draws()
    eps = fixed_eps(2, 3, seed=4)
    x = simulate_series(theta, eps, beta=beta, sigma=sigma, R=R)
    for row in range(2):
        args = (theta[row].tolist(), eps[row].tolist(), beta[row].item(), sigma[row].item(), R[row].item())
        assert x[row].tolist() == pytest.approx(first_three_by_hand(*args), rel=1e-12, abs=1e-15)
    # x_1 is the paper's eq. (16): equal shares, mean bias.
    assert x[0, 0].item() == pytest.approx((0.0 / 4 + 0.04 * eps[0, 0].item()) / 1.01)


def test_whole_series_matches_plain_recursion():
    theta, beta, sigma, R = two_draws()
    eps = fixed_eps(2, 40, seed=5)
    x = simulate_series(theta, eps, beta=beta, sigma=sigma, R=R)
    for row in range(2):
        expected = plain_series(
            theta[row].tolist(), eps[row].tolist(), beta[row].item(), sigma[row].item(), R[row].item()
        )
        np.testing.assert_allclose(x[row].numpy(), expected, rtol=1e-10, atol=1e-12)


def test_values_do_not_depend_on_horizon():
    theta, beta, sigma, R = two_draws()
    eps = fixed_eps(2, 60, seed=6)
    base = simulate_series(theta, eps, beta=beta, sigma=sigma, R=R)
    for horizon in (0, 1, 2, 100):
        assert torch.equal(simulate_series(theta, eps, horizon, beta=beta, sigma=sigma, R=R), base)


# --- gradients and the gradient horizon ---------------------------------------------------------------------------


def independent_series(theta, eps, beta, sigma, R):
    """Straightforward torch implementation (scalars, explicit exp/sum, no detach) for one draw."""
    g = [torch.zeros(()), theta[0], theta[1], torch.tensor(1.01, dtype=theta.dtype)]
    b = [torch.zeros(()), theta[2], theta[3], torch.zeros(())]
    xs = [torch.zeros((), dtype=theta.dtype)] * 3
    for e in eps:
        a = [beta * (xs[-1] - R * xs[-2]) * (g[j] * xs[-3] + b[j] - R * xs[-2]) for j in range(4)]
        w = [torch.exp(v) for v in a]
        total = sum(w)
        xs.append((sum(w[j] / total * (g[j] * xs[-1] + b[j]) for j in range(4)) + sigma * e) / R)
    return torch.stack(xs[3:])


def test_full_horizon_gradients_match_independent_implementation():
    theta, beta, sigma, R = two_draws()
    eps = fixed_eps(2, 20, seed=7)
    weights = fixed_eps(2, 20, seed=8)
    leaves = [t.clone().requires_grad_() for t in (theta, beta, sigma, R)]
    x = simulate_series(leaves[0], eps, None, beta=leaves[1], sigma=leaves[2], R=leaves[3])
    grads = torch.autograd.grad((weights * x).sum(), leaves)
    for row in range(2):
        own = [t[row].clone().requires_grad_() for t in (theta, beta, sigma, R)]
        expected = torch.autograd.grad((weights[row] * independent_series(own[0], eps[row], *own[1:])).sum(), own)
        for got, want in zip(grads, expected):
            torch.testing.assert_close(got[row], want, rtol=1e-9, atol=1e-12)
    # H = 3 covers every lag: identical to no detaching.
    leaves3 = [t.clone().requires_grad_() for t in (theta, beta, sigma, R)]
    x3 = simulate_series(leaves3[0], eps, 3, beta=leaves3[1], sigma=leaves3[2], R=leaves3[3])
    for got, want in zip(torch.autograd.grad((weights * x3).sum(), leaves3), grads):
        assert torch.equal(got, want)


def one_step_partials(x, eps, theta, t, h=1e-6):
    """Central finite differences of the one-step map at step t (1-based) with the lags held at their values:
    (∂f/∂θ (4,), ∂f/∂x_{t-k} for k = 1, 2, 3)."""
    lags = [x[t - 1 - k] if t - 1 - k >= 0 else 0.0 for k in (1, 2, 3)]

    def f(th, lag):
        return step(lag[0], lag[1], lag[2], th, eps[t - 1])

    def central(g, point, i):
        up, down = list(point), list(point)
        up[i] += h
        down[i] -= h
        return (g(up) - g(down)) / (2 * h)

    d_theta = [central(lambda th: f(th, lags), theta, i) for i in range(4)]
    d_lag = [central(lambda lag: f(theta, lag), lags, k) for k in range(3)]
    return np.array(d_theta), d_lag


def jacobian_of_series(theta, eps, horizon):
    return torch.autograd.functional.jacobian(lambda th: simulate_series(th[None], eps[None], horizon)[0], theta)


def test_horizon_zero_keeps_only_the_explicit_dependence():
    theta = torch.tensor(TRUTH, dtype=torch.float64)
    eps = fixed_eps(1, 25, seed=9)[0]
    x = simulate_series(theta[None], eps[None])[0].tolist()
    jac = jacobian_of_series(theta, eps, 0).numpy()  # (T, 4): dx_t/dθ with H = 0
    for t in (1, 2, 3, 5, 10, 25):
        explicit, _ = one_step_partials(x, eps.tolist(), TRUTH, t)
        np.testing.assert_allclose(jac[t - 1], explicit, rtol=1e-6, atol=1e-9, err_msg=f"t = {t}")


@pytest.mark.parametrize("horizon", [1, 2, None])
def test_horizon_keeps_exactly_the_lags_within_it(horizon):
    """dx_t/dθ = ∂f/∂θ + Σ_{k ≤ min(H, 3)} ∂f/∂x_{t-k} · dx_{t-k}/dθ, each dx_{t-k}/dθ truncated the same way."""
    theta = torch.tensor(TRUTH, dtype=torch.float64)
    eps = fixed_eps(1, 12, seed=10)[0]
    x = simulate_series(theta[None], eps[None])[0].tolist()
    jac = jacobian_of_series(theta, eps, horizon).numpy()
    kept = 3 if horizon is None else min(horizon, 3)
    for t in range(1, 13):
        explicit, d_lag = one_step_partials(x, eps.tolist(), TRUTH, t)
        expected = explicit + sum(d_lag[k - 1] * jac[t - 1 - k] for k in range(1, kept + 1) if t - 1 - k >= 0)
        np.testing.assert_allclose(jac[t - 1], expected, rtol=1e-5, atol=1e-7, err_msg=f"H = {horizon}, t = {t}")


# --- simulator interface ------------------------------------------------------------------------------------------


def test_simulator_interface_seeds_shapes_and_dataset():
    model = BrockHommes(PAPER, steps=100, draws=3)
    params = model.natural_parameters()
    first = model.simulate(params, seed=11)["x"]
    assert first.shape == (3, 100) and first.dtype == torch.float64 and torch.isfinite(first).all()
    assert torch.equal(model.simulate(params, seed=11)["x"], first)
    assert not torch.allclose(model.simulate(params, seed=12)["x"], first)
    assert not torch.allclose(first[0], first[1]), "draws get independent noise"
    assert model()["x"].shape == (3, 100)
    ds = model.to_dataset({"x": first}, params)
    assert ds["x"].dims == ("draw", "time")
    np.testing.assert_array_equal(ds["time"].values, np.arange(1, 101))
    assert set(model.space.names) == set(PAPER) and model.controls == {}
    double = {k: v.double() for k, v in params.items()}
    assert model.simulate(double, seed=11)["x"].dtype == torch.float64


def test_gradients_reach_all_seven_parameters():
    model = BrockHommes(PAPER, steps=100, draws=3)
    params = {k: v.double().requires_grad_() for k, v in model.natural_parameters().items()}
    x = model.simulate(params, seed=13)["x"]
    grads = torch.autograd.grad(x.pow(2).mean(), list(params.values()))
    for name, grad in zip(params, grads):
        assert torch.isfinite(grad).all() and (grad != 0).any(), name


def test_config_instantiates_the_model():
    from hydra.utils import instantiate

    cfg = OmegaConf.load(ROOT / "conf" / "model" / "brock_hommes.yaml")
    model = instantiate(cfg)
    assert isinstance(model, BrockHommes)
    assert (model.steps, model.draws, model.horizon) == (100, 4, None)
    assert model.defaults == pytest.approx(PAPER)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"steps": 3}, ["model.steps", "3"]),
        ({"steps": 10.5}, ["model.steps", "10.5"]),
        ({"horizon": -1}, ["model.horizon", "-1"]),
        ({"horizon": 1.5}, ["model.horizon", "1.5"]),
        ({"draws": 0}, ["model.draws", "0"]),
        ({"parameters": {**PAPER, "sigma": -0.5}}, ["sigma", "-0.5"]),
        ({"parameters": {**PAPER, "beta": 0.0}}, ["beta", "0.0"]),
        ({"parameters": {**PAPER, "g2": math.nan}}, ["g2", "nan"]),
        ({"parameters": {k: v for k, v in PAPER.items() if k != "R"}}, ["missing", "R"]),
        ({"parameters": {**PAPER, "g4": 1.0}}, ["unknown", "g4"]),
    ],
)
def test_bad_configuration_is_named(kwargs, words):
    arguments = {"parameters": PAPER, **kwargs}
    with pytest.raises(ValueError) as error:
        BrockHommes(**arguments)
    for word in words:
        assert word in str(error.value)


def test_bad_simulate_inputs_are_named():
    model = BrockHommes(PAPER, steps=10, draws=2)
    params = model.natural_parameters()
    with pytest.raises(ValueError, match=r"R.*-1"):
        model.simulate({**params, "R": torch.tensor([1.01, -1.0])})
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        model.simulate({**params, "g2": torch.tensor(0.9)})
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        model.simulate({**params, "b3": torch.zeros(3)})
    with pytest.raises(ValueError, match="control 'multiplier'"):
        model.simulate(params, controls={"multiplier": torch.ones(2, 10)})
    with pytest.raises(ValueError, match="horizon"):
        simulate_series(torch.zeros(1, 4), torch.zeros(1, 5), horizon=-2)
    with pytest.raises(ValueError, match="theta"):
        simulate_series(torch.zeros(1, 3), torch.zeros(1, 5))


# --- gradient study -----------------------------------------------------------------------------------------------

ESTIMATORS = ["H0", "H1", "H2", "H100", "score"]


def factory(steps):
    return lambda horizon: BrockHommes(PAPER, steps=steps, horizon=horizon)


def observed(steps):
    with torch.no_grad():
        return factory(steps)(None).simulate(
            {k: torch.tensor([v], dtype=torch.float64) for k, v in PAPER.items()}, seed=123
        )["x"][0]


@pytest.fixture(scope="module")
def tiny_study():
    return diagonal_gaussian_estimates(
        factory(20), observed(20), TRUTH, [0.05] * 4, ESTIMATORS, samples=5, repeats=8, reference_samples=64, seed=3
    )


def test_diagonal_gaussian_study_shapes(tiny_study):
    assert tiny_study["estimates"].shape == (5, 8, 8)
    assert tiny_study["reference"].shape == tiny_study["reference_se"].shape == (8,)
    assert tiny_study["theta"].shape == (8, 5, 4) and tiny_study["losses"].shape == (8, 5)
    assert tiny_study["phi_names"][0] == "mu_g2" and tiny_study["phi_names"][-1] == "sigma_b3"
    assert tiny_study["estimators"] == ESTIMATORS
    assert np.isfinite(tiny_study["estimates"]).all() and (tiny_study["reference_se"] > 0).all()
    # Repeats are independent: their own θ draws (and simulator noise), so no two estimates coincide.
    assert len(np.unique(tiny_study["theta"][:, 0, 0])) == 8
    assert len(np.unique(tiny_study["estimates"][0, :, 0])) == 8


def test_score_estimates_are_eq_28(tiny_study):
    """(1/N) Σ_n ℓ(θ_n) ∇_φ log q_φ(θ_n), φ = (μ, σ), by autograd of the Gaussian log-density."""
    mu = torch.tensor(TRUTH, dtype=torch.float64, requires_grad=True)
    sd = torch.full((4,), 0.05, dtype=torch.float64, requires_grad=True)
    theta, losses = torch.as_tensor(tiny_study["theta"]), torch.as_tensor(tiny_study["losses"])
    for r in range(8):
        surrogate = (losses[r] * Independent(Normal(mu, sd), 1).log_prob(theta[r])).mean()
        expected = torch.cat(torch.autograd.grad(surrogate, (mu, sd))).numpy()
        np.testing.assert_allclose(tiny_study["estimates"][4, r], expected, rtol=1e-9)


def test_pathwise_estimates_backpropagate_through_the_draws(tiny_study):
    """H100's estimate of repeat r is ∇_φ of the mean loss of its draws θ = μ + σ u (simulator seed: chunk 0)."""
    model = factory(20)(None)
    mu = torch.tensor(TRUTH, dtype=torch.float64, requires_grad=True)
    sd = torch.full((4,), 0.05, dtype=torch.float64, requires_grad=True)
    u = (torch.as_tensor(tiny_study["theta"]) - mu.detach()) / sd.detach()
    losses = loss_of_draws(model, observed(20), stable_seed(3, "gradient_study", "simulator", 0))(
        (mu + sd * u).reshape(-1, 4)
    ).reshape(8, 5)
    np.testing.assert_allclose(losses.detach().numpy(), tiny_study["losses"], rtol=1e-12)
    for r in (0, 7):
        expected = torch.cat(torch.autograd.grad(losses[r].mean(), (mu, sd), retain_graph=True)).numpy()
        np.testing.assert_allclose(tiny_study["estimates"][3, r], expected, rtol=1e-9, atol=1e-12)


def test_h0_has_less_spread_than_score_and_full_horizon(tiny_study):
    """The paper's claim (Figs. 2, 6): the H = 0 estimates of ∂E_q[ℓ]/∂μ_j vary least. Measured here (T = 20,
    σ = 0.05, 8 repeats) the sd ratio is about 100 for both the score and the H100 estimator, so 8 repeats suffice."""
    spread = tiny_study["estimates"].std(axis=1, ddof=1)[:, :4]
    names = tiny_study["estimators"]
    h0, h100, score = (spread[names.index(n)] for n in ("H0", "H100", "score"))
    assert (h0 < score).all(), (h0, score)
    assert (h0 < h100).all(), (h0, h100)


def test_full_horizon_pathwise_agrees_with_score_reference():
    """Pathwise H100 is unbiased for ∇_μ E_q[ℓ]: its mean over repeats must lie within 4 combined standard
    errors, sqrt(se_H100² + se_ref²) with se = sd/sqrt(count), of the score reference (a 4-sigma two-sided
    z-test per component: false-alarm rate about 6e-5 each if the means were Gaussian; seeds are fixed).
    T = 10 rather than 20: at T = 20 the pathwise estimates are already heavy-tailed (chaotic dynamics at
    β = 120; sd up to 700 for 5 draws), so their sample SE is unreliable; at T = 10 they are not, and the
    reference's ∇_{μ_b2}, ∇_{μ_b3} are > 5 combined SE from zero, so a sign or scale error is caught."""
    study = diagonal_gaussian_estimates(
        factory(10), observed(10), TRUTH, [0.05] * 4, ["H100"], samples=5, repeats=400, reference_samples=8000, seed=1
    )
    mean = study["estimates"][0].mean(0)[:4]
    se = study["estimates"][0].std(0, ddof=1)[:4] / math.sqrt(400)
    combined = np.sqrt(se**2 + study["reference_se"][:4] ** 2)
    z = (mean - study["reference"][:4]) / combined
    assert (np.abs(z) < 4).all(), (mean, study["reference"][:4], combined)
    assert (np.abs(study["reference"][2:4]) > 5 * combined[2:4]).all(), "the reference should be informative"


def test_flow_gradient_spread_and_its_mean():
    prior = Prior(
        {name: Normal(torch.tensor(v), torch.tensor(0.2)) for name, v in zip(("g2", "g3", "b2", "b3"), TRUTH)},
        BrockHommes(PAPER).space,
    )
    settings = {"transforms": 2, "hidden_features": [8]}
    y = observed(20)
    spread = flow_gradient_spread(
        factory(20), y, prior, ["H0", "H100", "score"], settings, samples=3, repeats=4, seed=5
    )
    flow, q = initial_flow(prior, settings, seed=5)
    n_phi = sum(p.numel() for p in flow.parameters())
    assert spread["sd"].shape == spread["mean"].shape == (3, n_phi) and len(spread["phi_names"]) == n_phi
    assert 0 < spread["active"].sum() < n_phi, "masked MADE weights get no gradient"
    assert np.isfinite(spread["sd"]).all() and (spread["sd"][:, ~spread["active"]] == 0).all()
    assert spread["nonfinite_losses"] == 0
    # The mean over repeats of the per-repeat estimates is ∇_φ of the mean over all draws.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stable_seed(5, "gradient_study", "flow_theta"))
        theta = torch.cat([q.rsample((3,)) for _ in range(4)])
    simulator_seed = stable_seed(5, "gradient_study", "flow_simulator", 0)
    params = list(flow.parameters())
    pathwise = loss_of_draws(factory(20)(None), y, simulator_seed)(theta).mean()
    expected = torch.cat([g.reshape(-1) for g in torch.autograd.grad(pathwise, params)]).numpy()
    np.testing.assert_allclose(spread["mean"][1], expected, rtol=1e-7, atol=1e-12)
    with torch.no_grad():
        losses = loss_of_draws(factory(20)(None), y, simulator_seed)(theta.detach())
    score = (losses * q.log_prob(theta.detach())).mean()
    expected = torch.cat([g.reshape(-1) for g in torch.autograd.grad(score, params)]).numpy()
    np.testing.assert_allclose(spread["mean"][2], expected, rtol=1e-7, atol=1e-12)


def test_figures_are_written(tiny_study, tmp_path):
    spread = {
        "sd": np.abs(tiny_study["estimates"].std(1)),
        "active": np.ones(8, dtype=bool),
        "estimators": tiny_study["estimators"],
    }
    for path in (
        plot_gradient_boxplots(tiny_study, tmp_path / "fig6.png"),
        plot_gradient_spread(spread, tmp_path / "fig2.png"),
    ):
        assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_unknown_estimator_is_named():
    threads = torch.get_num_threads()
    with pytest.raises(ValueError, match="'H-1'"):
        diagonal_gaussian_estimates(
            factory(10), observed(10), TRUTH, [0.05] * 4, ["H-1"], repeats=2, reference_samples=2
        )
    with pytest.raises(ValueError, match="twice"):
        flow_gradient_spread(factory(10), observed(10), None, ["H0", "H0"], repeats=2)
    with pytest.raises(ValueError, match="sd"):
        diagonal_gaussian_estimates(
            factory(10), observed(10), TRUTH, [0.0] * 4, ["H0"], repeats=2, reference_samples=2, threads=1
        )
    assert torch.get_num_threads() == threads, "the study restores torch's intra-op threads"
