"""Gradient estimators of ∇_φ E_{q_φ}[ℓ(θ)] for variational calibration (GVI).

Each returns a surrogate scalar whose value is the Monte-Carlo mean of ℓ over the draws and
whose gradient with respect to the variational parameters φ is the estimator
(Mohamed et al. 2020, "Monte Carlo gradient estimation in machine learning", JMLR 21:132):

- `pathwise`: reparameterisation, θ = T_φ(ε), backpropagated through the differentiable simulator.
- `score`: score function (REINFORCE), E_q[(ℓ(θ) − b) ∇_φ log q_φ(θ)] with a leave-one-out
  baseline b (Kool et al. 2019); needs no simulator gradient. `score_plain`: the same without b.

The simulator's own derivatives in `pathwise` come in the study's `ad.mode` (`diffabm.models.autodiff`): with
`forward`, the loss Jacobian ∂ℓ/∂θ comes from forward-mode AD, one pass per parameter, chained into the flow by
reverse mode (Quera-Bofarull et al. 2023, "Some challenges of calibrating differentiable agent-based models").
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.distributions import Distribution

LossOfDraws = Callable[[Tensor], Tensor]  # θ (B, d) -> ℓ (B,)


def pathwise(theta: Tensor, q: Distribution, losses_of: LossOfDraws) -> tuple[Tensor, Tensor]:
    """Surrogate and losses (B,) by backpropagation through the simulator."""
    losses = losses_of(theta)
    return losses.mean(), losses


def score(theta: Tensor, q: Distribution, losses_of: LossOfDraws, baseline: bool = True) -> tuple[Tensor, Tensor]:
    """Surrogate and losses (B,) of the score-function estimator with a leave-one-out baseline."""
    samples = theta.detach()
    with torch.no_grad():
        losses = losses_of(samples)
    draws = losses.shape[0]
    advantage = losses - (losses.sum() - losses) / (draws - 1) if baseline and draws > 1 else losses
    weighted = advantage * q.log_prob(samples)
    return losses.mean() + (weighted - weighted.detach()).mean(), losses


def score_plain(theta: Tensor, q: Distribution, losses_of: LossOfDraws) -> tuple[Tensor, Tensor]:
    """The score-function estimator without a baseline: (1/N) Σ_n ℓ(θ_n) ∇_φ log q_φ(θ_n) (Quera-Bofarull, Dyer et
    al. 2023, eq. 28)."""
    return score(theta, q, losses_of, baseline=False)


ESTIMATORS = {"pathwise": pathwise, "score": score, "score_plain": score_plain}


def gradient_estimator(kind: str) -> Callable[[Tensor, Distribution, LossOfDraws], tuple[Tensor, Tensor]]:
    """The estimator named `kind` (pathwise | score | score_plain)."""
    if kind not in ESTIMATORS:
        raise ValueError(f"calibration.flow.estimator: unknown {kind!r}; choose from {sorted(ESTIMATORS)}")
    return ESTIMATORS[kind]
