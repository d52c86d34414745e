"""Differentiable Bernoulli draws: hard samples in the forward pass, surrogate gradients backward.

Every estimator maps `logits` and uniform noise `u` (same shape) to samples. With the same
noise the forward values are identical across estimators (`u < sigmoid(logits)`), so
estimators differ only in their gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def logistic_noise(u: Tensor) -> Tensor:
    """Logistic noise `log u - log(1 - u)`: the difference of two Gumbel variables."""
    return torch.log(u) - torch.log1p(-u)


def rate_to_logits(rate: Tensor) -> Tensor:
    """Logits of the event probability `1 - exp(-rate)` of a Poisson process over one step."""
    rate = rate.clamp(1e-12, 30.0)
    return torch.log(torch.expm1(rate))


class _StraightThroughGumbelFromRate(torch.autograd.Function):
    """Hard draw with probability `1 - exp(-rate)`; backward recomputes the Gumbel-softmax gradient.

    Saves only `rate` and `u`, so a simulation step keeps two tensors per agent for backward.
    """

    @staticmethod
    def forward(ctx, rate: Tensor, u: Tensor, temperature: float) -> Tensor:
        ctx.save_for_backward(rate, u)
        ctx.temperature = temperature
        return (u < -torch.expm1(-rate)).to(rate.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        rate, u = ctx.saved_tensors
        clamped = rate.clamp(1e-12, 30.0)
        soft = torch.sigmoid((torch.log(torch.expm1(clamped)) + logistic_noise(u)) / ctx.temperature)
        dlogits_drate = -1.0 / torch.expm1(-clamped)
        inside = (rate >= 1e-12) & (rate <= 30.0)
        return grad * soft * (1 - soft) / ctx.temperature * dlogits_drate * inside, None, None


@dataclass(frozen=True)
class StraightThroughGumbel:
    """Straight-through Gumbel-softmax (Jang, Gu & Poole 2017): hard sample, relaxed gradient."""

    temperature: float = 1.0

    def __call__(self, logits: Tensor, u: Tensor) -> Tensor:
        hard = (u < torch.sigmoid(logits)).to(logits.dtype)
        if not (torch.is_grad_enabled() and logits.requires_grad):
            return hard
        soft = torch.sigmoid((logits + logistic_noise(u)) / self.temperature)
        return hard + (soft - soft.detach())

    def from_rate(self, rate: Tensor, u: Tensor) -> Tensor:
        """A draw with probability `1 - exp(-rate)`, the same as `self(rate_to_logits(rate), u)`."""
        return _StraightThroughGumbelFromRate.apply(rate, u, self.temperature)


@dataclass(frozen=True)
class GumbelSoftmax:
    """Relaxed Bernoulli (binary Concrete; Maddison, Mnih & Teh 2017): soft samples in (0, 1)."""

    temperature: float = 0.1

    def __call__(self, logits: Tensor, u: Tensor) -> Tensor:
        return torch.sigmoid((logits + logistic_noise(u)) / self.temperature)

    def from_rate(self, rate: Tensor, u: Tensor) -> Tensor:
        """A draw with probability `1 - exp(-rate)`."""
        return self(rate_to_logits(rate), u)


@dataclass(frozen=True)
class StraightThrough:
    """Straight-through estimator (Bengio, Léonard & Courville 2013): gradient of the mean `p`."""

    def __call__(self, logits: Tensor, u: Tensor) -> Tensor:
        probs = torch.sigmoid(logits)
        hard = (u < probs).to(probs.dtype)
        if not (torch.is_grad_enabled() and logits.requires_grad):
            return hard
        return hard + (probs - probs.detach())

    def from_rate(self, rate: Tensor, u: Tensor) -> Tensor:
        """A draw with probability `1 - exp(-rate)`; the gradient is that of the probability."""
        probs = -torch.expm1(-rate)
        hard = (u < probs).to(probs.dtype)
        return hard + (probs - probs.detach())


BernoulliEstimator = StraightThroughGumbel | GumbelSoftmax | StraightThrough
