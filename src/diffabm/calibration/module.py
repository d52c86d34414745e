"""The Lightning module shared by all calibration modes: seeded steps, loss checks, logging.

A step's simulator seed and Monte-Carlo noise are functions of (run seed, global step), so a run
resumed from a checkpoint continues exactly as an uninterrupted one would. The learning rate is
constant or follows a cosine from `lr` to 0 at the last step (Loshchilov & Hutter 2017, "SGDR",
ICLR, without restarts): with a noisy simulator, a constant rate leaves the parameters jittering
around the optimum, and the decay lets them settle.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from diffabm.calibration.target import CalibrationTarget, Controls
from diffabm.models.base import stable_seed

LR_SCHEDULES = ("constant", "cosine")


class CalibrationDiverged(RuntimeError):
    """A non-finite loss or gradient: the message names the step and the parameter values."""


class CalibrationModule(L.LightningModule):
    """Base of the calibration modes: subclasses define `objective` and `posterior_draws`."""

    def __init__(
        self,
        target: CalibrationTarget,
        seed: int,
        draws_per_step: int,
        steps_per_epoch: int,
        lr: float,
        weight_decay: float,
        lr_schedule: str = "constant",
    ):
        super().__init__()
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"calibration: unknown lr_schedule {lr_schedule!r}; choose from {LR_SCHEDULES}")
        self.target = target
        self.seed = seed
        self.draws_per_step = draws_per_step
        self.steps_per_epoch = steps_per_epoch
        self.lr = lr
        self.weight_decay = weight_decay
        self.lr_schedule = lr_schedule
        self.last_theta: Tensor | None = None

    def step_seed(self, purpose: str) -> int:
        """The seed of this step's `purpose` (simulator, sampling), a function of run seed and step."""
        return stable_seed(self.seed, self.global_step, purpose)

    def objective(self) -> tuple[Tensor, dict[str, Tensor]]:
        """The step's scalar objective and the metrics to log."""
        raise NotImplementedError

    def posterior_draws(self, n: int, seed: int) -> Tensor:
        """n unconstrained parameter draws (n, d) from the calibrated posterior (or point estimate)."""
        raise NotImplementedError

    def controls(self, n: int) -> dict[str, Tensor] | None:
        """Calibrated model controls for n draws (name: (n, ...)), for modes that fit some; else None."""
        return None

    def losses(self, theta: Tensor, controls: Controls | None = None) -> Tensor:
        """Per-draw losses of θ (B, d) at this step's simulator seed, after checking θ is finite."""
        self.last_theta = theta.detach()
        if not torch.isfinite(theta).all():
            self.diverged("parameters are not finite")
        return self.target.losses(theta, self.step_seed("simulator"), controls)

    def diverged(self, what: str) -> None:
        """Raise CalibrationDiverged naming the step and the last parameter values."""
        values = self.target.describe(self.last_theta) if self.last_theta is not None else "unknown"
        raise CalibrationDiverged(f"calibration step {self.global_step}: {what}; parameters: {values}")

    def training_step(self, batch: Tensor, batch_index: int) -> Tensor:
        objective, metrics = self.objective()
        if not torch.isfinite(objective):
            self.diverged(f"loss is {objective.item()}")
        self.log_dict(
            {name: value.detach().float() for name, value in metrics.items()},
            prog_bar=True,
            on_step=True,
            on_epoch=True,
        )
        # The parameters' trajectory on the natural scale: this step's θ, the mean over its draws.
        if self.last_theta is not None:
            natural = self.target.natural(self.last_theta)
            self.log_dict(
                {f"parameter/{name}": natural[name].float().mean() for name in self.target.names},
                on_step=True,
                on_epoch=False,
            )
        return objective

    def on_after_backward(self) -> None:
        for name, parameter in self.named_parameters():
            if parameter.grad is not None and not torch.isfinite(parameter.grad).all():
                self.diverged(f"gradient of '{name}' is not finite")

    def configure_optimizers(self) -> dict:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        if self.lr_schedule == "constant":
            return {"optimizer": optimizer}
        steps = self.trainer.estimated_stepping_batches
        cosine = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}

    def train_dataloader(self) -> DataLoader:
        """Step indices only: every step draws its own simulations."""
        return DataLoader(torch.arange(self.steps_per_epoch), batch_size=None)
