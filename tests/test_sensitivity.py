"""One-shot sensitivity (`diffabm.sensitivity`): an analytic check, the methods' agreement, the stage's store."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import pytest
import torch
from conftest import make_model

from diffabm.models.base import Simulator
from diffabm.parameters import ParameterSpace
from diffabm.sensitivity import METHODS, outputs_of_interest, sensitivity


class Growth(Simulator):
    """y_t = a · exp(r t) · (1 + ε_t), ε ~ N(0, 0.1²) per draw and day: d E[Σ y]/da = Σ exp(r t) and
    d E[Σ y]/dr = Σ a t exp(r t), d max y/dr = a T' exp(r T') at the last day T' (ε kept by the seed)."""

    observables: ClassVar = {"y": ("time",)}

    def __init__(self, draws: int = 64, days: int = 10):
        super().__init__(ParameterSpace({"a": "positive", "r": "real"}), {"a": 2.0, "r": 0.1}, draws)
        self.days = days

    def simulate(self, parameters, seed=0, controls=None):
        draws = self.check_parameters(parameters)
        noise = torch.randn(draws, self.days, generator=torch.Generator().manual_seed(seed)) * 0.1
        t = torch.arange(self.days, dtype=torch.float32)
        return {"y": parameters["a"][:, None] * torch.exp(parameters["r"][:, None] * t) * (1 + noise)}

    def coords(self):
        return {"time": np.arange(self.days)}


def test_every_method_recovers_an_analytic_derivative():
    """Reverse mode, forward mode and finite differences of E[total y] equal the analytic derivatives within
    3 SE (and to 1e-4 relative between the two AD modes); a method the model lacks is a clear error."""
    model = Growth()
    outputs = outputs_of_interest(model, [{"observable": "y", "summary": summary} for summary in ("total", "peak")])
    methods = ["reverse_mode", "forward_mode", "finite_difference"]
    ds = sensitivity(model, {"a": 2.0, "r": 0.1}, outputs, methods, seeds=[0, 1])
    t = np.arange(10)
    expected = {"a": np.exp(0.1 * t).sum(), "r": (2.0 * t * np.exp(0.1 * t)).sum()}
    for m, method in enumerate(methods):
        for p, name in enumerate(["a", "r"]):
            mean, se = ds.derivative.values[m, 0, p], ds.standard_error.values[m, 0, p]
            assert abs(mean - expected[name]) < 3 * se + 1e-3 * expected[name], (method, name, mean, expected[name])
    np.testing.assert_allclose(ds.derivative.values[0], ds.derivative.values[1], rtol=1e-4)
    elasticity_r = ds.elasticity.values[0, 0, 1]
    assert math.isclose(elasticity_r, 0.1 * ds.derivative.values[0, 0, 1] / ds.output_value.values[0], rel_tol=1e-6)
    with pytest.raises(NotImplementedError, match="no stochastic derivatives"):
        sensitivity(model, {"a": 2.0, "r": 0.1}, outputs, ["stochastic"], seeds=[0])
    with pytest.raises(ValueError, match="Growth has no checkpointed reverse mode"):
        sensitivity(model, {"a": 2.0, "r": 0.1}, outputs, ["checkpointed_reverse_mode"], seeds=[0])


def test_sensitivities_at_posterior_draws_are_those_of_each_point():
    """`derivative_by_draw` at K posterior draws equals the sensitivity taken at each draw on its own, and its
    draws are the ones given."""
    model = Growth(draws=8)
    outputs = outputs_of_interest(model, [{"observable": "y", "summary": "total"}])
    draws = {"a": np.array([1.0, 3.0]), "r": np.array([0.05, 0.2])}
    ds = sensitivity(model, {"a": 2.0, "r": 0.1}, outputs, ["reverse_mode"], seeds=[0, 1], posterior_draws=draws)
    assert ds.derivative_by_draw.dims == ("posterior_draw", "output", "parameter")
    np.testing.assert_array_equal(ds.parameter_by_draw.values, [[1.0, 0.05], [3.0, 0.2]])
    for k in range(2):
        alone = sensitivity(model, {"a": draws["a"][k], "r": draws["r"][k]}, outputs, ["reverse_mode"], seeds=[0, 1])
        np.testing.assert_allclose(ds.derivative_by_draw.values[k], alone.derivative.values[0], rtol=1e-6)
        np.testing.assert_allclose(ds.standard_error_by_draw.values[k], alone.standard_error.values[0], rtol=1e-5)


def test_the_methods_agree_on_a_small_epidemic(small_population):
    """On a 2,000-agent toy epidemic (30 days, 48 draws × 2 seeds): reverse and forward mode agree to 1e-4
    relative; the unbiased stochastic derivatives agree with central differences within 3 SE for total
    infections in every β (the initial fraction's estimates are too heavy-tailed for an SE from 96 draws:
    2–10% of them are nonzero; tests/test_epidemic.py checks it with 512); outputs per age group get one row
    per group, labelled by grouping and group."""
    model = make_model(small_population, "model.draws=48", "model.parameters.initial_fraction=0.02")
    point = {name: float(value[0]) for name, value in model.natural_parameters(1).items()}
    outputs = outputs_of_interest(
        model,
        [{"observable": "new_infections", "summary": "total"}, {"observable": "infections_by_age", "summary": "total"}],
    )
    assert len(outputs) == 1 + len(model.course.age_bands)
    ds = sensitivity(model, point, outputs[:1], list(METHODS), seeds=[0, 1])
    np.testing.assert_allclose(ds.derivative.values[0], ds.derivative.values[1], rtol=1e-4, atol=1e-3)
    checkpointed = list(METHODS).index("checkpointed_reverse_mode")
    np.testing.assert_array_equal(ds.derivative.values[checkpointed], ds.derivative.values[0])  # exactly
    z = ds.z_against_finite_difference.values[list(METHODS).index("stochastic"), 0]
    names = list(ds.parameter.values)
    checked = [names.index(f"beta_{layer}") for layer in model.layers]
    assert np.all(np.abs(z[checked]) < 3), dict(zip(names, z))
    assert (ds.cost.values > 0).all()
    grouped = sensitivity(model, point, outputs[1:3], ["reverse_mode"], seeds=[0])
    assert list(grouped.grouping.values) == ["age_group"] * 2
    assert list(grouped.group.values) == list(model.coords()["age_group"][:2])


class Share(Simulator):
    """y_t = p t for a share p in (0, 1): d Σ y / dp = Σ t, whatever p's distance from the boundary."""

    observables: ClassVar = {"y": ("time",)}

    def __init__(self):
        super().__init__(ParameterSpace({"p": "unit_interval"}), {"p": 0.99}, draws=2)

    def simulate(self, parameters, seed=0, controls=None):
        self.check_parameters(parameters)
        return {"y": parameters["p"][:, None] * torch.arange(5.0)}

    def coords(self):
        return {"time": np.arange(5)}


def test_finite_differences_stay_in_the_parameter_domain():
    """At p = 0.99 a 5% step each way would leave (0, 1) (and fail its check); steps in the unconstrained
    coordinate stay inside and still give the derivative."""
    model = Share()
    ds = sensitivity(
        model,
        {"p": 0.99},
        outputs_of_interest(model, [{"observable": "y", "summary": "total"}]),
        ["finite_difference"],
        seeds=[0],
    )
    assert ds.derivative.values[0, 0, 0] == pytest.approx(10.0, rel=1e-4)


def test_calibrated_controls_are_held_by_every_method(small_population):
    """A daily transmission multiplier c (a Calib-NN posterior's control) held at c on every day is β·c without
    controls: every method's β derivatives at β with the control are c times those at β·c without it, the other
    parameters' equal (the same seeds; the finite differences' steps scale with θ). Fails if a method drops them."""
    model = make_model(small_population, "model.draws=8", "model.parameters.initial_fraction=0.02")
    point = {name: float(value[0]) for name, value in model.natural_parameters(1).items()}
    outputs = outputs_of_interest(model, [{"observable": "new_infections", "summary": "total"}])
    c = 1.5
    controls = {"transmission_multiplier": np.full(model.days, c, np.float32)}
    held = sensitivity(model, point, outputs, list(METHODS), seeds=[0], controls=controls)
    scaled = {name: value * c if name.startswith("beta_") else value for name, value in point.items()}
    reference = sensitivity(model, scaled, outputs, list(METHODS), seeds=[0])
    betas = [name.startswith("beta_") for name in held.parameter.values]
    expected = reference.derivative.values * np.where(betas, c, 1.0)
    np.testing.assert_allclose(held.derivative.values, expected, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(held.output_value.values, reference.output_value.values)
    assert np.abs(held.derivative.values[:, :, betas]).min() > 0
    np.testing.assert_array_equal(held.transmission_multiplier.values, controls["transmission_multiplier"])
    assert held.transmission_multiplier.dims == ("time",) and held.attrs["controls"] == ["transmission_multiplier"]


def test_a_calibnn_posterior_gives_its_mean_controls_and_each_draws_own(small_population, tmp_path):
    """The stage's point holds a posterior's controls at their means over its draws, and the derivatives at each
    posterior draw are taken with that draw's controls: equal to the sensitivity at that draw alone."""
    import xarray as xr

    from diffabm.sensitivity import evaluation_point, posterior_points
    from diffabm.store import write_dataset

    model = make_model(small_population, "model.draws=4")
    multipliers = np.stack([np.full(model.days, 0.5), np.linspace(0.5, 2.0, model.days)])
    ages = list(model.coords()["age_group"])
    by_age = np.random.default_rng(0).uniform(0.5, 1.5, (2, len(ages), model.days))  # stored (age_group, time)
    posterior = xr.Dataset(
        {
            "beta_household": (("chain", "draw"), [[2.0, 3.0]]),
            "transmission_multiplier": (("chain", "draw", "time"), multipliers[None]),
            "transmission_by_age": (("chain", "draw", "age_group", "time"), by_age[None]),
        },
        coords={"age_group": ages},
    )
    path = write_dataset(posterior, tmp_path / "calibnn.zarr", None, 0)
    point, controls = evaluation_point(model, path)
    assert point["beta_household"] == pytest.approx(2.5)
    np.testing.assert_allclose(controls["transmission_multiplier"], multipliers.mean(0), rtol=1e-6)
    np.testing.assert_allclose(controls["transmission_by_age"], by_age.mean(0).T, rtol=1e-6)  # the model's order
    draws = posterior_points(model, point, path, 2)
    np.testing.assert_allclose(draws["transmission_multiplier"], multipliers, rtol=1e-6)
    outputs = outputs_of_interest(model, [{"observable": "new_infections", "summary": "total"}])
    ds = sensitivity(model, point, outputs, ["reverse_mode"], seeds=[0], posterior_draws=draws, controls=controls)
    np.testing.assert_allclose(ds.transmission_multiplier_by_draw.values, multipliers, rtol=1e-6)
    assert ds.transmission_by_age.dims == ("time", "age_group") and list(ds.age_group.values) == ages
    for k in range(2):
        alone = sensitivity(
            model,
            {**point, "beta_household": float(draws["beta_household"][k])},
            outputs,
            ["reverse_mode"],
            seeds=[0],
            controls={name: draws[name][k] for name in ("transmission_multiplier", "transmission_by_age")},
        )
        np.testing.assert_allclose(ds.derivative_by_draw.values[k], alone.derivative.values[0], rtol=1e-5)
    assert not np.allclose(ds.derivative_by_draw.values[0], ds.derivative_by_draw.values[1], rtol=0.05)
    # the same labels in another order (time shared by two controls): put in the model's order, once
    labelled = posterior.assign_coords(time=model.coords()["time"])
    backwards = labelled.isel(age_group=slice(None, None, -1), time=slice(None, None, -1))
    _, reordered = evaluation_point(model, write_dataset(backwards, tmp_path / "reordered.zarr", None, 0))
    for name in ("transmission_multiplier", "transmission_by_age"):
        np.testing.assert_array_equal(reordered[name], controls[name])
    relabelled = write_dataset(
        posterior.assign_coords(age_group=[f"band {k}" for k in range(len(ages))]), tmp_path / "other.zarr", None, 0
    )
    with pytest.raises(ValueError, match=r"other.zarr: 'transmission_by_age' has age_group label 0 'band 0', "):
        evaluation_point(model, relabelled)
