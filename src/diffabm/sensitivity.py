"""Stage `sensitivity`: one-shot sensitivity analysis of a study's model, every parameter at once, verified.

The derivatives d E[y]/dθ of outputs of interest y (the total or the peak over time of an observable, one per
group of its other dimension, e.g. per age group) in every parameter θ, at a parameter set (a calibrated
posterior's mean, or the configured values), by up to four methods side by side:

- `reverse_mode`: autograd through the simulator, all parameters per output (one backward per output);
- `forward_mode`: `torch.func.jvp`, one tangent per parameter, all outputs per pass (Quera-Bofarull et al.
  2023, GradABM-JUNE, Fig. 3: memory independent of the days);
- `stochastic`: the model's unbiased stochastic derivatives (Arya et al. 2022), where it has them;
- `finite_difference`: central differences of about ± `step` × |θ|, taken in θ's unconstrained coordinate so
  that they never leave its domain, the same seed up and down (common random numbers).

Each is a mean over `seeds` × the model's draws, with its Monte-Carlo standard error (SE) and the number of
nonzero estimates (stochastic derivatives are heavy-tailed: with few nonzero estimates their SE means little);
the store also holds each method's agreement with the finite differences in SE, the elasticities
d log y / d log θ, and the cost of each method in forward runs (papers.md §4, §6).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from omegaconf import DictConfig
from torch import Tensor

from diffabm.build import build_model
from diffabm.models.base import Output, Simulator
from diffabm.store import as_object_strings, read_dataset, write_dataset

log = logging.getLogger(__name__)

METHODS = ("reverse_mode", "forward_mode", "stochastic", "finite_difference")
SUMMARIES: dict[str, Callable[[Tensor], Tensor]] = {  # over time, the first dimension after `draw`
    "total": lambda series: series.sum(1),
    "peak": lambda series: series.max(1).values,
}


@dataclass(frozen=True)
class OutputOfInterest:
    """`summary` over time of `observable`, for one `group` of its other dimension (if it has one)."""

    observable: str
    summary: str
    group: int | None = None
    label: str = ""

    @property
    def name(self) -> str:
        return " ".join(filter(None, (self.summary, self.observable, self.label)))

    def __call__(self, output: Output) -> Tensor:
        series = output[self.observable]
        value = SUMMARIES[self.summary](series)
        return value if self.group is None else value[:, self.group]


def outputs_of_interest(model: Simulator, specs: list[Mapping]) -> list[OutputOfInterest]:
    """Scalar outputs from `sensitivity.outputs` specs ({observable, summary}), one per group of an observable
    with a dimension besides time (e.g. one per age group of `infections_by_age`)."""
    outputs, coords = [], model.coords()
    for index, spec in enumerate(specs):
        observable, summary = spec["observable"], spec["summary"]
        if observable not in model.observables:
            raise ValueError(f"sensitivity.outputs[{index}].observable is '{observable}', expected one of "
                             f"{sorted(model.observables)}")
        if summary not in SUMMARIES:
            raise ValueError(f"sensitivity.outputs[{index}].summary is '{summary}', expected one of {list(SUMMARIES)}")
        dims = model.observables[observable]
        if dims[0] != "time" or len(dims) > 2:
            raise ValueError(f"sensitivity.outputs[{index}].observable '{observable}' has dimensions {dims}; "
                             "expected (time,) or (time, group)")
        if len(dims) == 1:
            outputs.append(OutputOfInterest(observable, summary))
        else:
            outputs.extend(OutputOfInterest(observable, summary, k, str(label))
                           for k, label in enumerate(coords[dims[1]]))
    return outputs


def parameter_point(model: Simulator, posterior_path: str | Path | None) -> dict[str, float]:
    """The configured parameters, with the calibrated ones replaced by their posterior means if given."""
    point = {name: float(value[0]) for name, value in model.natural_parameters(1).items()}
    if posterior_path is not None:
        posterior = read_dataset(posterior_path)
        point.update({name: float(posterior[name].mean()) for name in posterior.data_vars if name in point})
    return point


def derivatives(model: Simulator, point: Mapping[str, float], outputs: list[OutputOfInterest], method: str,
                seed: int, step: float = 0.05) -> Tensor:
    """Per-draw estimates (B, outputs, parameters) of d y/dθ at `point` by `method`, one simulation seed."""
    names = list(point)
    base = {name: torch.full((model.draws,), value) for name, value in point.items()}

    def statistics(parameters: Mapping[str, Tensor]) -> Tensor:
        output = model.simulate(parameters, seed)
        return torch.stack([f(output) for f in outputs], dim=1)  # (B, outputs)

    if method == "reverse_mode":
        leaves = {name: value.clone().requires_grad_(True) for name, value in base.items()}
        values = statistics(leaves)
        rows = []
        for k in range(len(outputs)):
            gradients = torch.autograd.grad(values[:, k].sum(), list(leaves.values()), retain_graph=True,
                                            allow_unused=True)
            rows.append(torch.stack([torch.zeros_like(values[:, k]) if g is None else g for g in gradients], -1))
        return torch.stack(rows, dim=1).detach()
    if method == "forward_mode":
        columns = []
        for name in names:
            _, tangent = torch.func.jvp(lambda value, name=name: statistics({**base, name: value}),
                                        (base[name],), (torch.ones_like(base[name]),))
            columns.append(tangent)
        return torch.stack(columns, dim=-1).detach()
    if method == "stochastic":  # all outputs from one run: a vector statistic
        return model.derivative_estimates(base, seed, lambda output: torch.stack([f(output) for f in outputs], 1),
                                          names)[1]
    if method == "finite_difference":  # steps ± `step` in the unconstrained coordinate: never out of the domain
        columns = []
        with torch.no_grad():
            for name in names:
                bijection, value = model.space.bijections[name], torch.tensor(point[name], dtype=torch.float64)
                unconstrained = bijection.inv(value)
                slope = bijection.log_abs_det_jacobian(unconstrained, value).exp()  # dθ/du
                h = step * value.abs() / slope if value != 0 else torch.tensor(step)  # about step × |θ| in θ
                up, down = (bijection(unconstrained + sign * h).item() for sign in (1, -1))
                columns.append((statistics({**base, name: torch.full_like(base[name], up)})
                                - statistics({**base, name: torch.full_like(base[name], down)})) / (up - down))
        return torch.stack(columns, dim=-1)
    raise ValueError(f"sensitivity.methods: unknown '{method}', expected some of {list(METHODS)}")


def sensitivity(model: Simulator, point: Mapping[str, float], outputs: list[OutputOfInterest], methods: list[str],
                seeds: list[int], step: float = 0.05) -> xr.Dataset:
    """Means and SE of d y/dθ per method over seeds × draws, agreement with finite differences (in SE),
    elasticities and each method's cost in forward runs; dimensions (method, output, parameter)."""
    names = list(point)
    base = {name: torch.full((model.draws,), value) for name, value in point.items()}
    with torch.no_grad():
        values = torch.cat([torch.stack([f(model.simulate(base, seed)) for f in outputs], dim=1).cpu()
                            for seed in seeds])
        started = time.perf_counter()  # one forward run, timed after the first (warm) ones
        model.simulate(base, seeds[0])
        forward_seconds = time.perf_counter() - started
    mean, se, nonzero, cost = [], [], [], []
    for method in methods:
        started = time.perf_counter()
        estimates = torch.cat([derivatives(model, point, outputs, method, seed, step).cpu() for seed in seeds]
                              ).double()
        cost.append((time.perf_counter() - started) / len(seeds) / forward_seconds)
        mean.append(estimates.mean(0))
        se.append(estimates.std(0) / estimates.shape[0] ** 0.5)
        nonzero.append((estimates != 0).sum(0))
        log.info("%s: %d estimates of %d outputs × %d parameters, %.1f forward runs each", method,
                 estimates.shape[0], len(outputs), len(names), cost[-1])
    mean, se = torch.stack(mean).numpy(), torch.stack(se).numpy()
    dims = ("method", "output", "parameter")
    ds = xr.Dataset(
        {"derivative": (dims, mean), "standard_error": (dims, se),
         "nonzero": (dims, torch.stack(nonzero).numpy()),
         "output_value": (("output",), values.double().mean(0).numpy()),
         "parameter_value": (("parameter",), np.array([point[name] for name in names])),
         "cost": (("method",), np.array(cost))},
        coords={"method": as_object_strings(methods), "output": as_object_strings([f.name for f in outputs]),
                "parameter": as_object_strings(names)})
    ds["elasticity"] = ds.derivative * ds.parameter_value / ds.output_value.where(ds.output_value != 0)
    if "finite_difference" in methods:
        reference = ds.isel(method=methods.index("finite_difference")).drop_vars("method")
        ds["z_against_finite_difference"] = (ds.derivative - reference.derivative) / np.sqrt(
            ds.standard_error**2 + reference.standard_error**2).where(lambda x: x > 0)
    ds.attrs.update(seeds=list(seeds), draws=model.draws, step=step,
                    forward_seconds=forward_seconds, model=type(model).__name__)
    return ds


def write_sensitivity(cfg: DictConfig, population_path: str | Path | None, posterior_path: str | Path | None,
                      output_path: str | Path) -> Path:
    """Stage `sensitivity`: the study's `sensitivity` section at the posterior mean (or the configured values)."""
    settings = cfg.sensitivity
    model = build_model(cfg, population_path)
    unknown = [method for method in settings.methods if method not in METHODS]
    if unknown:
        raise ValueError(f"sensitivity.methods: unknown {unknown}, expected some of {list(METHODS)}")
    outputs = outputs_of_interest(model, list(settings.outputs))
    point = parameter_point(model, posterior_path)
    seeds = [cfg.seed + k for k in range(settings.seeds)]
    ds = sensitivity(model, point, outputs, list(settings.methods), seeds, settings.step)
    if posterior_path is not None:
        ds.attrs["posterior"] = str(posterior_path)
    return write_dataset(ds, output_path, cfg, cfg.seed)
