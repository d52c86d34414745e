"""Generalised variational inference with a normalising flow (Knoblauch, Jewson & Damoulas 2022,
JMLR 23:132; Quera-Bofarull et al. 2023, "Bayesian calibration of differentiable agent-based
models", ICLR workshop; BlackBIRDS).

q_φ is a masked autoregressive flow (Papamakarios et al. 2017; `zuko.flows.MAF`) over the
unconstrained calibrated parameters. The objective is

    w · E_q[ℓ(y, θ)] + KL(q_φ ‖ π),   KL ≈ mean_b [log q_φ(θ_b) − log π(θ_b)],  θ_b = T_φ(ε_b),

with the KL's samples drawn by `rsample` and scored by `log_prob` of the same samples, so the
entropy's gradient reaches φ (`kl_gradient: total`), or only through the samples (`path`,
sticking the landing: the same mean, less variance near the optimum). E_q[ℓ]'s gradient comes
from `diffabm.calibration.estimators`.
With `loss_weight_warmup` steps, w rises linearly from w / warmup to w (annealing, as in
tempered VI), so q leaves the prior gradually instead of collapsing onto the first basin it meets.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import zuko
from torch import Tensor
from torch.distributions import AffineTransform, Distribution

from diffabm.calibration.estimators import gradient_estimator
from diffabm.calibration.module import CalibrationModule
from diffabm.calibration.priors import Prior
from diffabm.calibration.target import CalibrationTarget


def kl_estimate(
    q: Distribution, prior: Prior, n: int, log_density: Callable[[Tensor], Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    """Monte-Carlo KL(q‖π) from n reparameterised draws; returns (KL, draws (n, d)).

    `log_density` scores the draws instead of `q.log_prob`: q's density with its parameters cut
    from the graph gives the sticking-the-landing gradient (Roeder, Wu & Duvenaud 2017, NeurIPS),
    which drops the score term (zero in expectation) and so has zero variance where q = π.
    """
    if log_density is not None:
        theta = q.rsample((n,))
        log_q = log_density(theta)
    elif hasattr(q, "rsample_and_log_prob"):
        theta, log_q = q.rsample_and_log_prob((n,))
    else:
        theta = q.rsample((n,))
        log_q = q.log_prob(theta)
    return (log_q - prior.log_prob(theta)).mean(), theta


KL_GRADIENTS = ("total", "path")


class FlowCalibration(CalibrationModule):
    """A MAF posterior over θ trained on w · E_q[ℓ] + KL(q‖π)."""

    def __init__(
        self,
        target: CalibrationTarget,
        prior: Prior,
        seed: int,
        draws_per_step: int,
        steps_per_epoch: int,
        lr: float,
        weight_decay: float = 0.0,
        lr_schedule: str = "constant",
        loss_weight: float = 1.0,
        transforms: int = 16,
        hidden_features: Sequence[int] = (20, 20),
        estimator: str = "pathwise",
        loss_weight_warmup: int = 0,
        kl_gradient: str = "total",
    ):
        super().__init__(target, seed, draws_per_step, steps_per_epoch, lr, weight_decay, lr_schedule)
        if prior.names != target.names:
            raise ValueError(f"calibration.prior covers {prior.names}, calibrated parameters are {target.names}")
        if not (isinstance(loss_weight, (int, float)) and math.isfinite(loss_weight) and loss_weight > 0):
            raise ValueError(f"calibration.flow.loss_weight must be a positive number (or auto), got {loss_weight!r}")
        if kl_gradient not in KL_GRADIENTS:
            raise ValueError(f"calibration.flow.kl_gradient: unknown {kl_gradient!r}; choose from {KL_GRADIENTS}")
        if loss_weight_warmup < 0:
            raise ValueError(f"calibration.flow.loss_weight_warmup must be >= 0 steps, got {loss_weight_warmup}")
        self.prior = prior
        self.loss_weight = loss_weight
        self.loss_weight_warmup = loss_weight_warmup
        self.kl_gradient = kl_gradient
        self.estimate = gradient_estimator(estimator)
        self.flow = zuko.flows.MAF(target.dimension, 0, transforms=transforms, hidden_features=list(hidden_features))
        self._centre_on_prior()

    def _centre_on_prior(self) -> None:
        """Start q near the prior: θ is standardised by the prior's mean and sd before the MAF."""
        draws = self.prior.sample(4096, self.seed)
        self.register_buffer("shift", draws.mean(0))
        self.register_buffer("scale", draws.std(0))

    def posterior(self) -> Distribution:
        """q_φ over unconstrained θ."""
        return zuko.distributions.NormalizingFlow(AffineTransform(self.shift, self.scale).inv, self.flow())

    def forward(self, theta: Tensor) -> Tensor:
        """log q_φ(θ) of unconstrained draws θ (B, d)."""
        return self.posterior().log_prob(theta)

    def detached_log_density(self, theta: Tensor) -> Tensor:
        """log q(θ) with φ cut from the graph: gradients reach θ only."""
        return torch.func.functional_call(self, {name: p.detach() for name, p in self.named_parameters()}, (theta,))

    def objective(self) -> tuple[Tensor, dict[str, Tensor]]:
        q = self.posterior()
        log_density = self.detached_log_density if self.kl_gradient == "path" else None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.step_seed("variational"))
            kl, theta = kl_estimate(q, self.prior, self.draws_per_step, log_density)
        self.last_theta = theta.detach()
        expected_loss, losses = self.estimate(theta, q, self.losses)
        weight = self.current_loss_weight()
        objective = weight * expected_loss + kl
        return objective, {"objective": objective, "loss": losses.mean(), "kl": kl, "loss_weight": torch.tensor(weight)}

    def current_loss_weight(self) -> float:
        """w, raised linearly from w / warmup over the first `loss_weight_warmup` steps (annealing)."""
        if self.global_step >= self.loss_weight_warmup:
            return self.loss_weight
        return self.loss_weight * (self.global_step + 1) / self.loss_weight_warmup

    def posterior_draws(self, n: int, seed: int) -> Tensor:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.posterior().sample((n,))
