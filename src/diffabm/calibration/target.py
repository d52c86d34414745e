"""What is calibrated: a model of the simulator interface, the calibrated subset of its parameters and a
loss to data. Nothing here knows which model it is (`diffabm.models.base.Simulator`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from diffabm.calibration.losses import ObservationLoss
from diffabm.models.autodiff import AutoDiff
from diffabm.models.base import Output, Simulator

Controls = Mapping[str, Tensor]  # control name -> (B, *dims)
# through the simulator's graph | stochastic derivatives (unbiased) | central differences, common random numbers
GRADIENTS = ("autograd", "stochastic", "finite_differences")


class CalibrationTarget:
    """Loss ℓ(θ) of unconstrained calibrated parameters θ (B, d); other parameters stay fixed.

    θ's columns follow `names`; the fixed parameters keep their natural-scale values from
    `fixed`. All B draws run in one batched simulator call.
    """

    def __init__(
        self,
        model: Simulator,
        names: Sequence[str],
        fixed: Mapping[str, float],
        loss: ObservationLoss,
        replicates: int = 1,
        gradients: str = "autograd",
        alternatives: int = 1,
        step: float = 0.05,
        ad: AutoDiff = AutoDiff(),
    ):
        unknown = [name for name in names if name not in model.space.domains]
        if unknown:
            raise ValueError(f"calibrated parameters {unknown} are not model parameters {model.space.names}")
        not_observable = [name for name in loss.observed if name not in model.observables]
        if not_observable:
            raise ValueError(
                f"calibration.observables {not_observable} are not observables of the model {sorted(model.observables)}"
            )
        self.model = model
        self.names = list(names)
        self.fixed = {name: float(fixed[name]) for name in model.space.names if name not in self.names}
        self.loss = loss
        if replicates < 1:
            raise ValueError(f"calibration.replicates must be >= 1, got {replicates}")
        self.replicates = replicates
        if gradients not in GRADIENTS:
            raise ValueError(f"calibration.gradients: unknown {gradients!r}; choose from {GRADIENTS}")
        if alternatives < 1:
            raise ValueError(f"calibration.alternatives must be >= 1, got {alternatives}")
        if not step > 0:
            raise ValueError(f"calibration.step must be > 0, got {step}")
        self.gradients, self.alternatives, self.step, self.ad = gradients, alternatives, step, ad

    @property
    def dimension(self) -> int:
        return len(self.names)

    def natural(self, theta: Tensor) -> dict[str, Tensor]:
        """Natural-scale values of calibrated (from θ) and fixed parameters, each (B,)."""
        calibrated = {name: self.model.space.bijections[name](theta[..., i]) for i, name in enumerate(self.names)}
        fixed = {name: torch.full_like(theta[..., 0], value) for name, value in self.fixed.items()}
        return {name: {**calibrated, **fixed}[name] for name in self.model.space.names}

    def unconstrained(self, natural: Mapping[str, float | Tensor]) -> Tensor:
        """θ (B, d) of natural-scale values of the calibrated parameters."""
        columns = [
            self.model.space.bijections[name].inv(torch.as_tensor(natural[name], dtype=torch.float32))
            for name in self.names
        ]
        return torch.stack(torch.broadcast_tensors(*columns), dim=-1).reshape(-1, self.dimension)

    def simulate(self, theta: Tensor, seed: int, controls: Controls | None = None) -> Output:
        """One batched simulation of the B draws θ (B, d), with optional controls (each (B, ...)), differentiable in
        the mode `ad`."""
        return self.ad.simulate(self.model, self.natural(theta), seed, controls)

    def losses(self, theta: Tensor, seed: int, controls: Controls | None = None) -> Tensor:
        """ℓ(θ_b) for each draw (B,), comparing the mean of `replicates` simulations with the data.

        Averaging removes the pull of a point-wise loss towards parameters whose simulations vary less.
        """
        if self.gradients != "autograd" and torch.is_grad_enabled() and theta.requires_grad:
            if controls:
                raise ValueError(
                    f"calibration.gradients: {self.gradients} takes no controls (e.g. calibnn.control: null)"
                )
            estimate = self.stochastic_losses if self.gradients == "stochastic" else self.finite_difference_losses
            return estimate(theta, seed)
        return self.loss(self.replicate_means(theta, seed, controls))

    def finite_difference_losses(self, theta: Tensor, seed: int) -> Tensor:
        """ℓ(θ_b) (B,) whose gradient is the central difference (ℓ(θ + h e_k) − ℓ(θ − h e_k)) / 2h in each
        unconstrained coordinate, h = `step`, with the same seed (common random numbers): 2d + 1 batched runs."""
        with torch.no_grad():
            values = self.loss(self.replicate_means(theta.detach(), seed))
            shifts = self.step * torch.eye(self.dimension, device=theta.device, dtype=theta.dtype)
            gradient = torch.stack(
                [
                    (
                        self.loss(self.replicate_means(theta.detach() + shift, seed))
                        - self.loss(self.replicate_means(theta.detach() - shift, seed))
                    )
                    / (2 * self.step)
                    for shift in shifts
                ],
                dim=-1,
            )
        return values + (gradient * (theta - theta.detach())).sum(-1)

    def stochastic_losses(self, theta: Tensor, seed: int) -> Tensor:
        """ℓ(θ_b) (B,) of the mean of `replicates` simulations, whose gradient is the model's unbiased stochastic
        derivative of E[ℓ] (with `alternatives` coupled runs per simulation), chained to θ through the bijections:
        ℓ + Σ_k (dE[ℓ]/dθ_k) (θ_k − θ_k.detach()) on the natural scale."""
        natural = self.natural(theta)
        with torch.no_grad():
            values, derivatives = self.model.derivative_estimates(
                {name: value.detach() for name, value in natural.items()},
                seed,
                lambda output: self.loss({name: output[name] for name in self.loss.observed}),
                self.names,
                self.alternatives,
                self.replicates,
            )
        calibrated = torch.stack([natural[name] for name in self.names], dim=-1)
        return values + (derivatives * (calibrated - calibrated.detach())).sum(-1)

    def replicate_means(self, theta: Tensor, seed: int, controls: Controls | None = None) -> dict[str, Tensor]:
        """Each observable (B, ...) of the draws θ (B, d), averaged over `replicates` simulations."""
        repeat = self.replicates
        repeated = {name: values.repeat_interleave(repeat, dim=0) for name, values in (controls or {}).items()}
        output = self.simulate(theta.repeat_interleave(repeat, dim=0), seed, repeated)
        return {
            name: output[name].reshape(-1, repeat, *output[name].shape[1:]).mean(1) for name in self.model.observables
        }

    def describe(self, theta: Tensor) -> str:
        """Natural-scale values of θ (B, d) for messages."""
        natural = self.natural(theta.detach())
        return ", ".join(f"{name}={natural[name].tolist()}" for name in self.names)
