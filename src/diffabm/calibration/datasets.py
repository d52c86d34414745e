"""What a calibration run stores: its posterior draws (`posterior.zarr`) and their posterior-predictive
fit beside the observed data (`fit.zarr`), for any model of the simulator interface."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from diffabm.calibration.target import CalibrationTarget, Controls
from diffabm.models.base import Simulator, stable_seed
from diffabm.store import read_dataset


def read_posterior(path: str | Path, model: Simulator | None = None) -> xr.Dataset:
    """A posterior store with its draws flat: each variable's (chain, draw) as one `draw` dimension, chain by chain
    (the stores keep `chain` for ArviZ: `arviz.summary(xarray.open_zarr(path))` works as they are). With `model`,
    checked against it (`check_posterior`) and each calibrated control's dimensions in the model's order."""
    posterior = read_dataset(path)
    if "chain" in posterior.dims:
        draws = posterior.sizes["chain"] * posterior.sizes["draw"]
        variables = {
            name: (("draw", *values.dims[2:]), values.values.reshape(draws, *values.shape[2:]))
            for name, values in posterior.data_vars.items()
        }
        coords = {name: values for name, values in posterior.coords.items() if name not in ("chain", "draw")}
        posterior = xr.Dataset(variables, coords={"draw": np.arange(draws), **coords}, attrs=posterior.attrs)
    return posterior if model is None else check_posterior(posterior, model, path)


def check_posterior(posterior: xr.Dataset, model: Simulator, path: str | Path) -> xr.Dataset:
    """The posterior if every variable is one of `model`'s parameters (draw,) or controls (draw, *dims: the model's
    dimensions, in any order, with its labels where the store has them, in any order), the controls' dimensions and
    labels put in the model's order; else a ValueError naming the store, the variable and what does not fit."""
    coords, checked = model.coords(), posterior.copy()
    for name in posterior.data_vars:
        values = checked[name]  # with the labels of dimensions already put in order (shared by the variables)
        if name in model.defaults:
            expected: tuple[str, ...] = ()
        elif name in model.controls:
            expected = model.controls[name]
        else:
            raise ValueError(
                f"posterior {path}: variable '{name}' is neither a parameter nor a control of this model "
                f"(parameters {sorted(model.defaults)}, controls {sorted(model.controls)})"
            )
        if values.dims[:1] != ("draw",) or sorted(values.dims[1:]) != sorted(expected):
            raise ValueError(f"posterior {path}: '{name}' has dimensions {values.dims}, expected {('draw', *expected)}")
        for dim in expected:
            labels = [_label(label) for label in coords[dim]]
            if values.sizes[dim] != len(labels):
                raise ValueError(
                    f"posterior {path}: '{name}' has {values.sizes[dim]} {dim} labels, this model's {len(labels)}"
                )
            stored = [_label(label) for label in values[dim].values] if dim in values.coords else labels
            if stored != labels and sorted(stored) == sorted(labels) and len(set(stored)) == len(stored):
                position = {label: k for k, label in enumerate(stored)}  # the same labels in another order
                checked = checked.isel({dim: [position[label] for label in labels]})  # for every variable on `dim`
                values = checked[name]
            elif stored != labels:
                k = next(k for k, (a, b) in enumerate(zip(stored, labels)) if a != b)
                raise ValueError(
                    f"posterior {path}: '{name}' has {dim} label {k} {stored[k]!r}, this model's is {labels[k]!r} "
                    f"({len(labels)} labels)"
                )
        if expected:
            checked[name] = values.transpose("draw", *expected)
    return checked


def _label(value) -> str:
    """A coordinate label as text: dates as YYYY-MM-DD."""
    if isinstance(value, np.datetime64):
        return str(np.datetime_as_string(value, unit="D"))
    return str(value)


def spread_posterior_draws(
    posterior_path: str | Path, count: int, model: Simulator | None = None
) -> dict[str, np.ndarray]:
    """`count` draws of a stored posterior spread evenly over its draws (all if fewer): each variable by draw, the
    parameters (draw,) and any calibrated controls (draw, *dims), the same draws for all; with `model`, checked
    against it and the controls' dimensions in its order (`read_posterior`)."""
    posterior = read_posterior(posterior_path, model)
    stored = posterior.sizes.get("draw", 0)
    if not posterior.data_vars or not stored:
        raise ValueError(f"posterior {posterior_path}: holds no draws (variables {list(posterior.data_vars)})")
    index = np.unique(np.linspace(0, stored - 1, min(count, stored)).round().astype(int))
    return {
        name: posterior[name].values[index].astype(float)
        for name in posterior.data_vars
        if posterior[name].dims[:1] == ("draw",)
    }


def control_variables(target: CalibrationTarget, controls: Controls | None) -> tuple[dict, dict]:
    """Calibrated controls as (variables, coordinates) with the model's dimensions after `draw`."""
    coords = target.model.coords()
    variables, used = {}, {}
    for name, values in (controls or {}).items():
        dims = target.model.controls[name]
        variables[name] = (("chain", "draw", *dims), values.detach().cpu().numpy()[None])
        used.update({dim: coords[dim] for dim in dims})
    return variables, used


def posterior_dataset(
    target: CalibrationTarget, theta: Tensor, mode: str, observed: xr.Dataset, controls: Controls | None = None
) -> xr.Dataset:
    """Natural-scale draws (dimensions chain, of size one, and draw, as ArviZ reads a posterior) of the calibrated
    parameters, and any calibrated controls."""
    natural = target.natural(theta)
    variables, coords = control_variables(target, controls)
    ds = xr.Dataset(
        {
            **{name: (("chain", "draw"), natural[name].detach().cpu().numpy()[None]) for name in target.names},
            **variables,
        },
        coords={"chain": [0], "draw": np.arange(theta.shape[0]), **coords},
    )
    ds.attrs.update(mode=mode, **({"truth": observed.attrs["truth"]} if "truth" in observed.attrs else {}))
    return ds


def fit_dataset(
    target: CalibrationTarget,
    theta: Tensor,
    draws: int,
    seed: int,
    observed: xr.Dataset,
    controls: Controls | None = None,
) -> xr.Dataset:
    """Posterior-predictive series at `draws` draws of θ (cycled), the observed series and the losses.

    With a known truth, `truth_loss` holds the loss of the truth under the same simulator noise.
    """
    index = torch.arange(draws) % theta.shape[0]
    chosen = theta[index]
    chosen_controls = {name: values[index] for name, values in (controls or {}).items()}
    fit_seed = stable_seed(seed, "fit")
    with torch.no_grad():
        output = target.simulate(chosen, fit_seed, chosen_controls)
        ds = target.model.to_dataset(output, target.natural(chosen))
        ds["loss"] = ("draw", target.losses(chosen, fit_seed, chosen_controls).cpu().numpy())
        if "truth" in observed.attrs:
            truth = target.unconstrained(observed.attrs["truth"]).expand(draws, -1)
            ds["truth_loss"] = ("draw", target.losses(truth, fit_seed).cpu().numpy())
    for name in observed.data_vars:
        ds[f"observed_{name}"] = observed[name]
    ds.attrs.update(observables=list(target.loss.observed), loss=target.loss.kind)
    return ds
