"""Automatic-differentiation modes of a simulation (`ad.mode` of a study): how the gradients of a simulator's
outputs in its parameters are computed, for calibration and sensitivity alike.

- `reverse`: backpropagation through the simulation; memory grows with the number of steps.
- `forward`: forward mode (`torch.func.jvp`), one pass per parameter that needs a gradient; the derivatives of
  every output are kept and the parameters' gradients are their contraction with the outputs' gradients
  (a vector-Jacobian product from a stored Jacobian). Memory does not grow with the steps; the cost grows with
  the number of parameters (Quera-Bofarull et al. 2023, "Some challenges of calibrating differentiable
  agent-based models", Fig. 3; Baydin et al. 2018, "Automatic differentiation in machine learning: a survey").
- `checkpointed`: reverse mode with gradient checkpointing over time (Griewank & Walther 2000, "Algorithm 799:
  revolve"; Chen et al. 2016, "Training deep nets with sublinear memory cost"): only the first state of each
  segment of `segment_days` steps (default ≈ √T) is kept and the segment is recomputed in the backward pass,
  so memory grows like √T for about one extra forward run. For models with `Simulator.checkpointed`.

Example:
    >>> from diffabm.models.autodiff import AutoDiff
    >>> AutoDiff("checkpointed", segment_days=10).mode
    'checkpointed'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from diffabm.models.base import Output, Simulator


def has_tangent(tensor: Tensor) -> bool:
    """Whether `tensor` carries a forward-mode tangent: wrapped by a `torch.func` transform, or a
    `torch.autograd.forward_ad` dual."""
    return (
        torch._C._functorch.is_functorch_wrapped_tensor(tensor)
        or torch.autograd.forward_ad.unpack_dual(tensor).tangent is not None
    )


AD_MODES = ("reverse", "forward", "checkpointed")


@dataclass(frozen=True)
class AutoDiff:
    """An AD mode (`ad.mode`) and, for `checkpointed`, the segment length in steps (`ad.segment_days`; None: √T)."""

    mode: str = "reverse"
    segment_days: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in AD_MODES:
            raise ValueError(f"ad.mode is {self.mode!r}, expected one of {list(AD_MODES)}")
        if self.segment_days is not None and (
            isinstance(self.segment_days, bool)
            or int(self.segment_days) < 1
            or int(self.segment_days) != self.segment_days
        ):
            raise ValueError(f"ad.segment_days is {self.segment_days!r}, expected null or an integer >= 1")

    @classmethod
    def from_config(cls, settings: Mapping | None) -> AutoDiff:
        settings = dict(settings or {})
        return cls(str(settings.get("mode", "reverse")), settings.get("segment_days"))

    def check_controls(self, names: list[str]) -> None:
        """Forward mode refuses gradients in controls (one pass per control entry, e.g. per day)."""
        if self.mode == "forward" and names:
            raise ValueError(
                f"ad.mode: forward takes no gradients in controls ({', '.join(names)}: one pass per "
                "entry); use ad.mode: reverse or checkpointed"
            )

    def simulate(
        self,
        model: Simulator,
        parameters: Mapping[str, Tensor],
        seed: int,
        controls: Mapping[str, Tensor] | None = None,
    ) -> Output:
        """`model.simulate` whose outputs' gradients in the parameters (and controls) are computed in this mode."""
        tracked = torch.is_grad_enabled() and any(
            torch.as_tensor(value).requires_grad for value in [*parameters.values(), *(controls or {}).values()]
        )
        if self.mode == "reverse" or not tracked:
            return model.simulate(parameters, seed, controls)
        if self.mode == "checkpointed":
            with model.checkpointed(self.segment_days):
                return model.simulate(parameters, seed, controls)
        self.check_controls([name for name, value in (controls or {}).items() if value.requires_grad])
        names = list(parameters)
        values = _ForwardMode.apply(model, seed, controls, names, *(torch.as_tensor(parameters[n]) for n in names))
        return dict(zip(model.observables, values))


class _ForwardMode(torch.autograd.Function):
    """The simulation's outputs, with each parameter's output derivatives from one `jvp` (tangent 1 in every draw:
    draws are simulated independently, so that is each draw's own derivative); backward contracts them."""

    @staticmethod
    def forward(
        ctx, model: Simulator, seed: int, controls: Mapping[str, Tensor] | None, names: list[str], *values: Tensor
    ) -> tuple[Tensor, ...]:
        parameters = dict(zip(names, values))
        observables = list(model.observables)

        def outputs(**varied: Tensor) -> tuple[Tensor, ...]:
            output = model.simulate({**parameters, **varied}, seed, controls)
            return tuple(output[name] for name in observables)

        primal, tangents = None, []
        for name, needed in zip(names, ctx.needs_input_grad[4:]):
            if not needed:
                tangents.append(None)
                continue
            primal, tangent = torch.func.jvp(
                lambda value, name=name: outputs(**{name: value}),
                (parameters[name],),
                (torch.ones_like(parameters[name]),),
            )
            tangents.append(tangent)
        ctx.tangents = tangents
        return outputs() if primal is None else primal

    @staticmethod
    def backward(ctx, *grads: Tensor) -> tuple[Tensor | None, ...]:
        def contract(tangent: tuple[Tensor, ...]) -> Tensor:
            return sum((g * t).flatten(1).sum(1) for g, t in zip(grads, tangent) if g is not None)

        return (None, None, None, None, *(None if tangent is None else contract(tangent) for tangent in ctx.tangents))
