"""One contract, every model: each model in conf/model/ implements the simulator interface the same way
(as zuko tests every flow with one test). Calibration and the stages rely on nothing else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from diffabm.build import build_model
from diffabm.config import CONFIG_DIR, compose_study
from diffabm.models.autodiff import AutoDiff
from diffabm.models.base import Simulator
from diffabm.population.toy import toy_population
from diffabm.store import read_dataset, write_dataset

# Each model small, on a study that uses it: study, overrides, and whether it runs on a population.
SMALL = {
    "epidemic": ("toy", ["model.days=12", "population.n_agents=400", "model.parameters.initial_fraction=0.05"], True),
    "brock_hommes": ("bh-gradient-horizon", ["model.steps=20"], False),
}
MODELS = sorted(path.stem for path in (CONFIG_DIR / "model").glob("*.yaml"))


def small_model(name: str) -> Simulator:
    study, overrides, on_population = SMALL[name]
    cfg = compose_study(study, [f"model={name}", *overrides])
    return build_model(cfg, toy_population(400, seed=2) if on_population else None)


def test_every_model_config_has_a_small_setting():
    assert sorted(SMALL) == MODELS


@pytest.mark.parametrize("name", MODELS)
def test_model_contract(name, tmp_path):
    model = small_model(name)
    assert isinstance(model, Simulator)
    sizes = {dim: len(values) for dim, values in model.coords().items()}
    parameters = {key: value.requires_grad_(True) for key, value in model.natural_parameters(3).items()}
    assert sorted(parameters) == sorted(model.space.names)

    output = model.simulate(parameters, seed=5)
    assert sorted(output) == sorted(model.observables)
    for observable, dims in model.observables.items():
        assert tuple(output[observable].shape) == (3, *(sizes[dim] for dim in dims)), observable
        assert torch.isfinite(output[observable]).all(), observable
    again = model.simulate({key: value.detach() for key, value in parameters.items()}, seed=5)
    other = model.simulate({key: value.detach() for key, value in parameters.items()}, seed=6)
    for observable in model.observables:
        torch.testing.assert_close(again[observable], output[observable].detach(), rtol=0, atol=0)
    assert any(not torch.equal(other[observable], again[observable]) for observable in model.observables)

    total = sum(output[observable].sum() for observable in model.observables)
    gradients = torch.autograd.grad(total, list(parameters.values()), allow_unused=True)
    for key, gradient in zip(parameters, gradients):
        assert gradient is not None and torch.isfinite(gradient).all(), key
    assert any(gradient.abs().sum() > 0 for gradient in gradients)

    ds = model.to_dataset(again, {key: value.detach() for key, value in parameters.items()})
    for observable, dims in model.observables.items():
        assert ds[observable].dims == ("draw", *dims)
    back = read_dataset(write_dataset(ds, tmp_path / "simulation.zarr", None, 0))
    for observable in model.observables:
        np.testing.assert_array_equal(back[observable].values, again[observable].numpy())
    for key in model.space.names:
        np.testing.assert_array_equal(back[key].values, parameters[key].detach().numpy())


@pytest.mark.parametrize("name", MODELS)
def test_forward_mode_batches_its_tangents_and_matches_reverse_mode(name):
    """`ad.mode: forward` gives the same gradients with every parameter's tangent in one `vmap` pass as with one pass
    per parameter (a plain `jvp`) or two (bit for bit: each tangent is computed as by its own `jvp`), and reverse
    mode's to rounding."""
    model = small_model(name)
    weights = {observable: 1.0 + k for k, observable in enumerate(model.observables)}

    def gradients(ad: AutoDiff) -> tuple[torch.Tensor, ...]:
        leaves = {key: value.requires_grad_(True) for key, value in model.natural_parameters(3).items()}
        output = ad.simulate(model, leaves, seed=5)
        total = sum(weights[observable] * output[observable].sum() for observable in model.observables)
        return torch.autograd.grad(total, list(leaves.values()))

    batched = gradients(AutoDiff("forward", tangents_per_pass=len(model.space.names)))
    for per_pass in (None, 1, 2):  # as many as fit; one plain jvp per parameter; passes of two, the last of one or two
        for alone, together in zip(gradients(AutoDiff("forward", tangents_per_pass=per_pass)), batched):
            torch.testing.assert_close(together, alone, rtol=0, atol=0)
    for forward, reverse in zip(batched, gradients(AutoDiff("reverse"))):
        torch.testing.assert_close(forward, reverse, rtol=1e-4, atol=1e-6 * float(reverse.abs().max()))


def test_vmap_over_a_simulations_primal_values_is_refused_naming_what_can_be_vmapped():
    """The simulators' Functions batch forward-mode tangents only (their `vmap` rule): a batched primal, whose
    draws or histograms would be made per element, is refused with a message saying what can be vmapped."""
    from diffabm.models.epidemic.outputs import _Histogram

    day, group = torch.tensor([[0, 1, 1]]), torch.tensor([0, 0, 1])
    with pytest.raises(NotImplementedError, match="only forward-mode tangents can be vmapped"):
        torch.func.vmap(lambda weight: _Histogram.apply(weight, day, group, 2, 2))(torch.ones(4, 1, 3))
    tangent = torch.func.vmap(
        lambda t: torch.func.jvp(lambda w: _Histogram.apply(w, day, group, 2, 2), (torch.ones(1, 3),), (t,))[1]
    )(torch.ones(4, 1, 3))
    assert tangent.shape == (4, 1, 2, 2) and float(tangent.sum()) == 12


@pytest.mark.parametrize("name", MODELS)
def test_model_rejects_parameters_outside_their_domain_and_unknown_controls(name):
    model = small_model(name)
    parameters = model.natural_parameters(2)
    positive = next(key for key in model.space.names if model.space.domains[key] == "positive")
    with pytest.raises(ValueError, match=f"parameter '{positive}' has value -1.0"):
        model.simulate({**parameters, positive: torch.full((2,), -1.0)})
    with pytest.raises(ValueError, match="control 'curfew' is not one of this model's controls"):
        model.simulate(parameters, controls={"curfew": torch.ones(2, 3)})


def test_the_calibration_contract_names_every_model():
    """import-linter forbids calibration to import each concrete model by name: a new model must be added."""
    import tomllib

    from omegaconf import OmegaConf

    root = Path(__file__).resolve().parents[1]
    contracts = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    forbidden = next(c for c in contracts if c["source_modules"] == ["diffabm.calibration"])["forbidden_modules"]
    for name in MODELS:
        target = OmegaConf.load(CONFIG_DIR / "model" / f"{name}.yaml")["_target_"]
        assert target.rsplit(".", 1)[0] in forbidden, target
