"""Point calibration (c-GradABM; Chopra et al. 2023, AAMAS, "Differentiable agent-based
epidemiology", mode 1): unconstrained parameters optimised with AdamW through the simulator,
averaging the loss over several simulator draws per step.
"""

from __future__ import annotations

from torch import Tensor, nn

from diffabm.calibration.module import CalibrationModule
from diffabm.calibration.target import CalibrationTarget


class PointCalibration(CalibrationModule):
    """One unconstrained parameter vector θ (d,), fitted by gradient descent on the mean loss."""

    def __init__(
        self,
        target: CalibrationTarget,
        initial: Tensor,
        seed: int,
        draws_per_step: int,
        steps_per_epoch: int,
        lr: float,
        weight_decay: float = 0.0,
        lr_schedule: str = "constant",
    ):
        super().__init__(target, seed, draws_per_step, steps_per_epoch, lr, weight_decay, lr_schedule)
        self.theta = nn.Parameter(initial.detach().clone().reshape(target.dimension))

    def objective(self) -> tuple[Tensor, dict[str, Tensor]]:
        loss = self.losses(self.theta.expand(self.draws_per_step, -1)).mean()
        return loss, {"loss": loss}

    def posterior_draws(self, n: int, seed: int) -> Tensor:
        return self.theta.detach().expand(n, -1).clone()
