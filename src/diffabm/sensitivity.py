"""Stage `sensitivity`: one-shot sensitivity analysis of a study's model, every parameter at once, verified.

The derivatives d E[y]/dθ of outputs of interest y (the total or the peak over time of an observable, one per
group of its other dimension, e.g. per age group) in every parameter θ, at a parameter set (a calibrated
posterior's mean, or the configured values; a Calib-NN posterior's calibrated controls held at their means), by up
to four methods side by side:

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
from diffabm.calibration.datasets import read_posterior, spread_posterior_draws
from diffabm.models.autodiff import AutoDiff
from diffabm.models.base import Output, Simulator
from diffabm.store import as_object_strings, write_dataset

log = logging.getLogger(__name__)

METHODS = ("reverse_mode", "forward_mode", "checkpointed_reverse_mode", "stochastic", "finite_difference")
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
            raise ValueError(
                f"sensitivity.outputs[{index}].observable is '{observable}', expected one of "
                f"{sorted(model.observables)}"
            )
        if summary not in SUMMARIES:
            raise ValueError(f"sensitivity.outputs[{index}].summary is '{summary}', expected one of {list(SUMMARIES)}")
        dims = model.observables[observable]
        if dims[0] != "time" or len(dims) > 2:
            raise ValueError(
                f"sensitivity.outputs[{index}].observable '{observable}' has dimensions {dims}; "
                "expected (time,) or (time, group)"
            )
        if len(dims) == 1:
            outputs.append(OutputOfInterest(observable, summary))
        else:
            outputs.extend(
                OutputOfInterest(observable, summary, k, str(label)) for k, label in enumerate(coords[dims[1]])
            )
    return outputs


def evaluation_point(
    model: Simulator, posterior_path: str | Path | None
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Where the derivatives are taken: the configured parameters, with the calibrated ones replaced by their
    posterior means if given, and a posterior's calibrated controls (a Calib-NN run's daily transmission
    multiplier) at their means over its draws, each with the control's dimensions (none without)."""
    point = {name: float(value[0]) for name, value in model.natural_parameters(1).items()}
    controls = {}
    if posterior_path is not None:
        posterior = read_posterior(posterior_path, model)
        point.update({name: float(posterior[name].mean()) for name in posterior.data_vars if name in point})
        controls = {
            name: posterior[name].mean("draw").values.astype(np.float32)
            for name in posterior.data_vars
            if name in model.controls
        }
    return point, controls


AD_METHODS = {
    "reverse_mode": AutoDiff("reverse"),
    "forward_mode": AutoDiff("forward"),
    "checkpointed_reverse_mode": AutoDiff("checkpointed"),
}


def posterior_points(
    model: Simulator, point: Mapping[str, float], posterior_path: str | Path | None, count: int
) -> dict[str, np.ndarray]:
    """`count` posterior draws spread evenly over the stored ones: every parameter (K,) (the calibrated ones from the
    posterior, the others at `point`) and the calibrated controls (K, *dims)."""
    if posterior_path is None:
        raise ValueError(
            f"sensitivity.posterior_draws is {count}, but sensitivity.posterior is null: no posterior to draw from"
        )
    draws = spread_posterior_draws(posterior_path, count, model)
    size = len(next(iter(draws.values())))
    return {name: draws[name] if name in draws else np.full(size, value) for name, value in point.items()} | {
        name: values.astype(np.float32) for name, values in draws.items() if name in model.controls
    }


def draw_controls(model: Simulator, controls: Mapping[str, np.ndarray]) -> dict[str, Tensor]:
    """Controls with the model's dimensions (no `draw`), the same for each of its draws (B, *dims)."""
    return {
        name: torch.as_tensor(values, dtype=torch.float32).expand(model.draws, *np.shape(values))
        for name, values in controls.items()
    }


def derivatives(
    model: Simulator,
    parameters: Mapping[str, Tensor],
    outputs: list[OutputOfInterest],
    method: str,
    seed: int,
    step: float = 0.05,
    ad: AutoDiff | None = None,
    controls: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """Per-row estimates (B, outputs, parameters) of d y/dθ at `parameters` (each (B,)) by `method`, one seed, the
    `controls` (each (B, *dims)) held.

    The AD methods take all outputs from one simulation: reverse mode one backward pass per output, forward mode
    one pass per parameter (`diffabm.models.autodiff`); `ad` replaces the method's mode (e.g. with its segments).
    """
    names = list(parameters)

    def statistics(values: Mapping[str, Tensor], mode: AutoDiff = AutoDiff()) -> Tensor:
        output = mode.simulate(model, values, seed, controls)
        return torch.stack([f(output) for f in outputs], dim=1)  # (B, outputs)

    if method in AD_METHODS:
        leaves = {name: value.detach().clone().requires_grad_(True) for name, value in parameters.items()}
        values = statistics(leaves, ad or AD_METHODS[method])
        rows = []
        for k in range(len(outputs)):
            gradients = torch.autograd.grad(
                values[:, k].sum(), list(leaves.values()), retain_graph=True, allow_unused=True
            )
            rows.append(torch.stack([torch.zeros_like(values[:, k]) if g is None else g for g in gradients], -1))
        return torch.stack(rows, dim=1).detach()
    if method == "stochastic":  # all outputs from one run: a vector statistic
        return model.derivative_estimates(
            parameters, seed, lambda output: torch.stack([f(output) for f in outputs], 1), names, controls=controls
        )[1]
    if method == "finite_difference":  # steps ± `step` in the unconstrained coordinate: never out of the domain
        columns = []
        with torch.no_grad():
            for name in names:
                bijection, value = model.space.bijections[name], parameters[name].double()
                unconstrained = bijection.inv(value)
                slope = bijection.log_abs_det_jacobian(unconstrained, value).exp()  # dθ/du
                h = torch.where(value != 0, step * value.abs() / slope, step)  # about step × |θ| in θ
                up, down = (bijection(unconstrained + sign * h) for sign in (1, -1))
                change = statistics({**parameters, name: up.to(parameters[name].dtype)}) - statistics(
                    {**parameters, name: down.to(parameters[name].dtype)}
                )
                columns.append(change / (up - down).to(change.dtype)[:, None])
        return torch.stack(columns, dim=-1)
    raise ValueError(f"sensitivity.methods: unknown '{method}', expected some of {list(METHODS)}")


MODE_METHODS = {ad.mode: method for method, ad in AD_METHODS.items()}  # ad.mode -> its sensitivity method


def estimates_over_seeds(
    model: Simulator,
    parameters: Mapping[str, Tensor],
    outputs: list[OutputOfInterest],
    method: str,
    seeds: list[int],
    step: float,
    ad: AutoDiff,
    controls: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """Estimates (seeds, B, outputs, parameters), float64 on the CPU; the AD method of `ad.mode` runs in `ad`."""
    mode = ad if MODE_METHODS[ad.mode] == method else None
    return torch.stack(
        [derivatives(model, parameters, outputs, method, seed, step, mode, controls).cpu() for seed in seeds]
    ).double()


def mean_and_standard_error(estimates: Tensor) -> tuple[Tensor, Tensor]:
    """The mean of independent estimates (first dimension) and its Monte-Carlo standard error, sd / √n."""
    return estimates.mean(0), estimates.std(0) / estimates.shape[0] ** 0.5


def sensitivity(
    model: Simulator,
    point: Mapping[str, float],
    outputs: list[OutputOfInterest],
    methods: list[str],
    seeds: list[int],
    step: float = 0.05,
    posterior_draws: Mapping[str, np.ndarray] | None = None,
    ad: AutoDiff = AutoDiff(),
    controls: Mapping[str, np.ndarray] | None = None,
) -> xr.Dataset:
    """Means and SE of d y/dθ per method over seeds × draws, agreement with finite differences (in SE),
    elasticities and each method's cost in forward runs; dimensions (method, output, parameter); the `controls`
    (each with the model's dimensions of the control) held and stored. With `posterior_draws` (each parameter (K,),
    each control (K, *dims)), also the derivatives at each of those K points by the AD method of `ad.mode`
    (`derivative_by_draw`, dimensions (posterior_draw, output, parameter))."""
    names = list(point)
    base = {name: torch.full((model.draws,), value) for name, value in point.items()}
    held = draw_controls(model, controls or {})
    with torch.no_grad():
        values = torch.cat(
            [torch.stack([f(model.simulate(base, seed, held)) for f in outputs], dim=1).cpu() for seed in seeds]
        )
        started = time.perf_counter()  # one forward run, timed after the first (warm) ones
        model.simulate(base, seeds[0], held)
        forward_seconds = time.perf_counter() - started
    mean, se, nonzero, cost = [], [], [], []
    for method in methods:
        started = time.perf_counter()
        estimates = estimates_over_seeds(model, base, outputs, method, seeds, step, ad, held).flatten(0, 1)
        cost.append((time.perf_counter() - started) / len(seeds) / forward_seconds)
        estimate_mean, estimate_se = mean_and_standard_error(estimates)
        mean.append(estimate_mean)
        se.append(estimate_se)
        nonzero.append((estimates != 0).sum(0))
        log.info(
            "%s: %d estimates of %d outputs × %d parameters, %.1f forward runs each",
            method,
            estimates.shape[0],
            len(outputs),
            len(names),
            cost[-1],
        )
    mean, se = torch.stack(mean).numpy(), torch.stack(se).numpy()
    dims = ("method", "output", "parameter")
    ds = xr.Dataset(
        {
            "derivative": (dims, mean),
            "standard_error": (dims, se),
            "nonzero": (dims, torch.stack(nonzero).numpy()),
            "output_value": (("output",), values.double().mean(0).numpy()),
            "parameter_value": (("parameter",), np.array([point[name] for name in names])),
            "cost": (("method",), np.array(cost)),
        },
        coords={
            "method": as_object_strings(methods),
            "output": as_object_strings([f.name for f in outputs]),
            "parameter": as_object_strings(names),
            **output_coords(model, outputs),
        },
    )
    ds["elasticity"] = ds.derivative * ds.parameter_value / ds.output_value.where(ds.output_value != 0)
    if "finite_difference" in methods:
        reference = ds.isel(method=methods.index("finite_difference")).drop_vars("method")
        ds["z_against_finite_difference"] = (ds.derivative - reference.derivative) / np.sqrt(
            ds.standard_error**2 + reference.standard_error**2
        ).where(lambda x: x > 0)
    model_coords = model.coords()
    for name, values in (controls or {}).items():
        dims = model.controls[name]
        ds[name] = xr.DataArray(np.asarray(values), dims=dims, coords={dim: model_coords[dim] for dim in dims})
    if posterior_draws is not None:
        ds = ds.merge(by_posterior_draw(model, posterior_draws, outputs, seeds, ad, names))
    ds.attrs.update(
        controls=sorted(controls or {}),
        seeds=list(seeds),
        draws=model.draws,
        step=step,
        by_draw_method=MODE_METHODS[ad.mode],
        forward_seconds=forward_seconds,
        model=type(model).__name__,
    )
    return ds


def by_posterior_draw(
    model: Simulator,
    posterior_draws: Mapping[str, np.ndarray],
    outputs: list[OutputOfInterest],
    seeds: list[int],
    ad: AutoDiff,
    names: list[str],
) -> xr.Dataset:
    """d y/dθ at each posterior draw θ_k (mean and SE over seeds × the model's draws) by the AD method of
    `ad.mode`, with the draw's calibrated controls: how the sensitivities vary over the posterior."""
    count = len(next(iter(posterior_draws.values())))
    mean, se = [], []
    for k in range(count):
        parameters = {name: torch.full((model.draws,), float(posterior_draws[name][k])) for name in names}
        controls = draw_controls(
            model, {name: values[k] for name, values in posterior_draws.items() if name in model.controls}
        )
        estimates = estimates_over_seeds(
            model, parameters, outputs, MODE_METHODS[ad.mode], seeds, 0.0, ad, controls
        ).flatten(0, 1)
        estimate_mean, estimate_se = mean_and_standard_error(estimates)
        mean.append(estimate_mean)
        se.append(estimate_se)
    dims = ("posterior_draw", "output", "parameter")
    return xr.Dataset(
        {
            "derivative_by_draw": (dims, torch.stack(mean).numpy()),
            "standard_error_by_draw": (dims, torch.stack(se).numpy()),
            "parameter_by_draw": (
                ("posterior_draw", "parameter"),
                np.stack([np.asarray(posterior_draws[name], dtype=float) for name in names], -1),
            ),
            **{
                f"{name}_by_draw": (("posterior_draw", *model.controls[name]), values)
                for name, values in posterior_draws.items()
                if name in model.controls
            },
        },
        coords={"posterior_draw": np.arange(count)},
    )


def output_coords(model: Simulator, outputs: list[OutputOfInterest]) -> dict[str, tuple]:
    """Per output: its observable, summary, grouping (the observable's group dimension, e.g. `ethnicity`; "" for
    none) and group label, so that stores and figures can reshape outputs by group."""
    grouping = [model.observables[f.observable][1] if f.group is not None else "" for f in outputs]
    return {
        "observable": ("output", as_object_strings([f.observable for f in outputs])),
        "summary": ("output", as_object_strings([f.summary for f in outputs])),
        "grouping": ("output", as_object_strings(grouping)),
        "group": ("output", as_object_strings([f.label for f in outputs])),
    }


def write_sensitivity(
    cfg: DictConfig, population_path: str | Path | None, posterior_path: str | Path | None, output_path: str | Path
) -> Path:
    """Stage `sensitivity`: the study's `sensitivity` section at the posterior mean (or the configured values)."""
    settings = cfg.sensitivity
    model = build_model(cfg, population_path)
    unknown = [method for method in settings.methods if method not in METHODS]
    if unknown:
        raise ValueError(f"sensitivity.methods: unknown {unknown}, expected some of {list(METHODS)}")
    outputs = outputs_of_interest(model, list(settings.outputs))
    point, controls = evaluation_point(model, posterior_path)
    seeds = [cfg.seed + k for k in range(settings.seeds)]
    draws = (
        posterior_points(model, point, posterior_path, settings.posterior_draws) if settings.posterior_draws else None
    )
    ad = AutoDiff.from_config(cfg.get("ad"))
    ds = sensitivity(model, point, outputs, list(settings.methods), seeds, settings.step, draws, ad, controls)
    if posterior_path is not None:
        ds.attrs["posterior"] = str(posterior_path)
    return write_dataset(ds, output_path, cfg, cfg.seed)
