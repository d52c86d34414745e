"""The simulator interface: what every model gives the stages after it (observe, calibration, loss
weight, sensitivity, counterfactuals, figures), which use nothing else of a model.

A model has
- a `ParameterSpace` (`space`): names and domains of its scalar parameters, and their default
  natural-scale values (`defaults`, from `model.parameters` of its config);
- `simulate(parameters, seed, controls=None)`: B parameter draws at once (each parameter (B,),
  natural scale) with one seed, returning its observables, each a tensor with a leading `draw`
  dimension, differentiable in the parameters and in the controls;
- `observables`: the name of each output and its dimensions after `draw` (e.g. `("time",)`,
  `("time", "age_group")`), and `coords()`: the coordinate values of those dimensions; outputs are
  counts (≥ 0) unless listed in `signed_observables`;
- `controls`: names and dimensions of optional time-varying inputs (e.g. a daily multiplier of
  transmission that a Calib-NN emits), each (B, *dims) when given;
- `to_dataset(output, parameters)`: the outputs as an xarray Dataset with dimensions (draw, ...);
- optionally `checkpointed(segment_days)`: a context for reverse mode with gradient checkpointing over time
  (`diffabm.models.autodiff`).

Example:
    >>> import torch
    >>> from diffabm.models.base import Simulator
    >>> issubclass(Simulator, torch.nn.Module)
    True
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn

from diffabm.parameters import ParameterSpace

Output = Mapping[str, Tensor]  # observable name -> (draw, *dims)


def stable_seed(*parts: object) -> int:
    """A 63-bit seed derived from the parts (run seed, purpose, day), the same in every process."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class Simulator(nn.Module, ABC):
    """Base of every model: parameters, observables, controls and the batched `simulate`."""

    space: ParameterSpace
    observables: Mapping[str, tuple[str, ...]]
    signed_observables: frozenset[str] = frozenset()  # observables that may be negative (others are counts)
    controls: Mapping[str, tuple[str, ...]] = {}

    def __init__(
        self, space: ParameterSpace, defaults: Mapping[str, float], draws: int = 1, device: torch.device | str = "cpu"
    ):
        super().__init__()
        if draws < 1:
            raise ValueError(f"model.draws must be >= 1, got {draws}")
        space.check_natural(defaults)
        self.space = space
        self.defaults = {name: float(defaults[name]) for name in space.names}
        self.draws = draws
        self.device = torch.device(device)

    @abstractmethod
    def simulate(
        self, parameters: Mapping[str, Tensor], seed: int = 0, controls: Mapping[str, Tensor] | None = None
    ) -> Output:
        """Observables of B draws (each parameter (B,), natural scale), one seed."""

    @abstractmethod
    def coords(self) -> dict[str, np.ndarray]:
        """Coordinate values of every dimension of the observables (and controls) but `draw`."""

    def exogenous_features(self, dimension: str) -> Tensor:
        """Known inputs of each day and group of `dimension` that are not data to fit, (days, groups, F): e.g. the
        epidemic's interventions and vaccine coverage, features for Calib-NN. None here: (days, groups, 0)."""
        coords = self.coords()
        return torch.zeros(len(coords["time"]), len(coords[dimension]), 0)

    def on_device(self, parameters: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The parameters as tensors on the model's device (stages make them on the CPU; gradients pass)."""
        return {name: torch.as_tensor(value).to(self.device) for name, value in parameters.items()}

    def check_parameters(self, parameters: Mapping[str, Tensor]) -> int:
        """Names, domains (finite, natural scale) and shapes (every parameter (B,)); returns B."""
        self.space.check_natural(parameters)
        shapes = {name: tuple(torch.as_tensor(value).shape) for name, value in parameters.items()}
        if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 1:
            raise ValueError(f"parameters must all have shape (B,), got {shapes}")
        return next(iter(shapes.values()))[0]

    def derivative_estimates(
        self,
        parameters: Mapping[str, Tensor],
        seed: int,
        statistic: Callable[[Output], Tensor],
        names: Sequence[str],
        alternatives: int = 1,
        replicates: int = 1,
        controls: Mapping[str, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """(statistic of B simulations (B,), unbiased estimates of d E[statistic]/dθ (B, d) for θ in `names`), for a
        model with stochastic derivatives through its discrete draws (`alternatives` coupled runs per draw, each
        cutting the variance; the statistic of the mean of `replicates` runs; `controls` held, as `simulate` takes
        them); others raise NotImplementedError."""
        raise NotImplementedError(
            f"{type(self).__name__} has no stochastic derivatives (calibration.gradients: autograd)"
        )

    def outputs_without_forward_mode(self, tangents: Mapping[str, Tensor]) -> dict[str, str]:
        """Given the forward-mode tangents of every observable in one parameter, the observables whose tangents lack
        a term that reverse mode gives, each with why: a nonzero gradient reaching one of them in `ad.mode: forward`
        is an error. None by default."""
        return {}

    def forward_tangents_per_pass(self, draws: int, tangents: int) -> int:
        """How many of `tangents` forward-mode tangents one pass of `draws` draws computes together (`ad.mode:
        forward`, `torch.func.vmap` over `jvp`): all of them; models whose memory per draw is large bound it."""
        return tangents

    def checkpointed(self, segment_days: int | None = None) -> AbstractContextManager[None]:
        """A context in which `simulate` is reverse-mode differentiable with gradient checkpointing over time:
        only each segment's first state is kept, the segment recomputed in the backward pass (`segment_days`
        steps; None: about √T); for models whose memory grows with the steps, others raise ValueError."""
        raise ValueError(
            f"ad.mode: checkpointed, but {type(self).__name__} has no checkpointed reverse mode "
            f"(its memory does not grow with the steps; use ad.mode: reverse)"
        )

    def natural_parameters(self, draws: int | None = None) -> dict[str, Tensor]:
        """The default parameters, each (draws,) (the model's `draws` unless given)."""
        count = self.draws if draws is None else draws
        return {name: torch.full((count,), value, device=self.device) for name, value in self.defaults.items()}

    def forward(
        self,
        parameters: Mapping[str, Tensor] | None = None,
        seed: int = 0,
        controls: Mapping[str, Tensor] | None = None,
    ) -> Output:
        """`simulate` at `parameters`, or at the defaults for the model's `draws`."""
        return self.simulate(self.natural_parameters() if parameters is None else parameters, seed, controls)

    def control_shape(self, name: str, draws: int) -> tuple[int, ...]:
        """The shape (draws, *dims) of control `name`."""
        coords = self.coords()
        return (draws, *(len(coords[dim]) for dim in self.controls[name]))

    def check_controls(self, controls: Mapping[str, Tensor] | None, draws: int) -> dict[str, Tensor]:
        """Known names, shape (draws, *dims), finite values; or a ValueError naming the control. Returned on the
        model's device (stages make them on the CPU, as the parameters; gradients pass)."""
        controls = self.on_device(controls or {})
        for name, values in controls.items():
            if name not in self.controls:
                raise ValueError(f"control {name!r} is not one of this model's controls {sorted(self.controls)}")
            shape = self.control_shape(name, draws)
            if tuple(values.shape) != shape:
                raise ValueError(f"control {name!r} has shape {tuple(values.shape)}, expected {shape}")
            if not torch.isfinite(values.detach()).all():
                raise ValueError(f"control {name!r} has non-finite values")
        return controls

    def to_dataset(self, output: Output, parameters: Mapping[str, Tensor] | None = None) -> xr.Dataset:
        """The observables as a Dataset (draw, *dims) with the model's coordinates, and the parameters by draw."""
        draws = next(iter(output.values())).shape[0]
        coords = self.coords()
        ds = xr.Dataset(
            {
                name: (("draw", *self.observables[name]), output[name].detach().cpu().numpy())
                for name in self.observables
            },
            coords={
                "draw": np.arange(draws),
                **{
                    dim: values
                    for dim, values in coords.items()
                    if any(dim in dims for dims in self.observables.values())
                },
            },
        )
        for name, values in (parameters or {}).items():
            ds[name] = ("draw", torch.as_tensor(values).detach().cpu().reshape(-1).expand(draws).numpy())
        return ds
