"""Automatic-differentiation modes of a simulation (`ad.mode` of a study): how the gradients of a simulator's
outputs in its parameters are computed, for calibration and sensitivity alike.

- `reverse`: backpropagation through the simulation; memory grows with the number of steps.
- `forward`: forward mode (`torch.func.jvp`), one tangent per parameter that needs a gradient, batched by
  `torch.func.vmap` (`tangents_per_pass` at a time, at most as many as the model's memory allows,
  `Simulator.forward_tangents_per_pass`): the simulation's states and draws are computed once per pass, its
  tangents for every parameter of the pass at once. The derivatives of every output are kept and the parameters'
  gradients are their contraction with the outputs' gradients (a vector-Jacobian product from a stored Jacobian).
  Memory does not grow with the steps; the cost grows with the number of parameters (Quera-Bofarull et al. 2023,
  "Some challenges of calibrating differentiable agent-based models", Fig. 3, one pass per parameter; Baydin et
  al. 2018, "Automatic differentiation in machine learning: a survey").
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

import functools
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


def vmap_tangents_only(info, in_dims: tuple, *args) -> tuple:
    """The `vmap` rule of the simulators' autograd Functions: `torch.func.vmap` may batch their forward-mode tangents
    (the Functions' `jvp` then computes all of them in one pass, `_ForwardMode`), never their primal inputs, the
    simulation's states, whose random draws are made once; torch calls this rule only where a primal is batched."""
    raise NotImplementedError(
        "torch.func.vmap over a simulation's states or parameters: only forward-mode tangents can be vmapped"
    )


AD_MODES = ("reverse", "forward", "checkpointed")


@dataclass(frozen=True)
class AutoDiff:
    """An AD mode (`ad.mode`); for `checkpointed`, the segment length in steps (`ad.segment_days`; None: √T); for
    `forward`, how many tangents one pass computes (`ad.tangents_per_pass`; None: as many as memory allows)."""

    mode: str = "reverse"
    segment_days: int | None = None
    tangents_per_pass: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in AD_MODES:
            raise ValueError(f"ad.mode is {self.mode!r}, expected one of {list(AD_MODES)}")
        for name in ("segment_days", "tangents_per_pass"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or int(value) < 1 or int(value) != value):
                raise ValueError(f"ad.{name} is {value!r}, expected null or an integer >= 1")

    @classmethod
    def from_config(cls, settings: Mapping | None) -> AutoDiff:
        settings = dict(settings or {})
        return cls(
            str(settings.get("mode", "reverse")), settings.get("segment_days"), settings.get("tangents_per_pass")
        )

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
        values = _ForwardMode.apply(
            model, seed, controls, names, self.tangents_per_pass, *(torch.as_tensor(parameters[n]) for n in names)
        )
        return dict(zip(model.observables, values))


class _ForwardMode(torch.autograd.Function):
    """The simulation's outputs, with each parameter's output derivatives from `jvp` (tangent 1 in every draw: draws
    are simulated independently, so that is each draw's own derivative); backward contracts them. The parameters
    pass in groups of `tangents_per_pass` (None: all; at most what `Simulator.forward_tangents_per_pass` allows),
    only a group's parameters as duals, their tangents (the rows of an identity) batched by `torch.func.vmap`: the
    primal simulation runs once per group, unbatched (the simulators' Functions refuse batched primals,
    `vmap_tangents_only`), and each tangent equals the one of its own `jvp` (a group of one is a plain `jvp`)."""

    @staticmethod
    def forward(
        ctx,
        model: Simulator,
        seed: int,
        controls: Mapping[str, Tensor] | None,
        names: list[str],
        tangents_per_pass: int | None,
        *values: Tensor,
    ) -> tuple[Tensor, ...]:
        parameters = dict(zip(names, values))
        observables = list(model.observables)
        varied = [name for name, needed in zip(names, ctx.needs_input_grad[5:]) if needed]
        ctx.set_materialize_grads(False)  # outputs the loss does not use get None, not zeros (`backward`)

        def outputs(passed: list[str], *passed_values: Tensor) -> tuple[Tensor, ...]:
            output = model.simulate({**parameters, **dict(zip(passed, passed_values))}, seed, controls)
            return tuple(output[name] for name in observables)

        def tangent_pass(passed: list[str], *directions: Tensor) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
            """The outputs and their tangents in `directions`, with only the `passed` parameters as duals."""
            primals = tuple(parameters[name] for name in passed)
            return torch.func.jvp(functools.partial(outputs, passed), primals, directions)

        if not varied:
            ctx.tangents = [None] * len(names)
            return outputs([])
        wanted = min(tangents_per_pass or len(varied), len(varied))
        per_pass = model.forward_tangents_per_pass(model.check_parameters(parameters), wanted)
        by_name = {}
        for first in range(0, len(varied), per_pass):
            passed = varied[first : first + per_pass]  # only these parameters carry tangents in this pass
            if len(passed) == 1:  # a plain jvp (models whose sums cannot be batched take one tangent per pass)
                primal, tangents = tangent_pass(passed, torch.ones_like(parameters[passed[0]]))
                tangents = tuple(tangent[None] for tangent in tangents)
            else:  # parameter k's tangent is 1 in every draw of row k, 0 in the others
                identity = torch.eye(len(passed))
                directions = tuple(
                    identity[:, k].to(value).reshape(-1, *[1] * value.dim()).expand(len(passed), *value.shape)
                    for k, value in enumerate(parameters[name] for name in passed)
                )
                primal, tangents = torch.func.vmap(
                    functools.partial(tangent_pass, passed),
                    out_dims=(None, 0),
                    randomness="same",  # the primal's draws, made once for all tangents (an unbatched random call)
                )(*directions)
            for row, name in enumerate(passed):
                by_name[name] = tuple(tangent[row] for tangent in tangents)
        ctx.tangents = [by_name.get(name) for name in names]
        ctx.refused = {  # per parameter: the outputs whose tangents lack a term of reverse mode's, and why
            name: model.outputs_without_forward_mode(dict(zip(observables, tangents)))
            for name, tangents in by_name.items()
        }
        ctx.observables = observables
        return primal

    @staticmethod
    def backward(ctx, *grads: Tensor) -> tuple[Tensor | None, ...]:
        used = {name: grad for name, grad in zip(ctx.observables, grads) if grad is not None}
        for parameter, refused in ctx.refused.items():
            for name in refused.keys() & {name for name, grad in used.items() if bool(grad.any())}:
                raise ValueError(f"ad.mode: forward cannot differentiate {name} in {parameter}: {refused[name]}")

        def contract(tangent: tuple[Tensor, ...]) -> Tensor | None:
            terms = [(grad * t).flatten(1).sum(1) for grad, t in zip(grads, tangent) if grad is not None]
            return sum(terms[1:], terms[0]) if terms else None

        contracted = (None if tangent is None else contract(tangent) for tangent in ctx.tangents)
        return (None, None, None, None, None, *contracted)
