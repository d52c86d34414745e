"""Differentiable Bernoulli draws: hard samples in the forward pass, surrogate gradients backward.

Every estimator maps `logits` and uniform noise `u` (same shape) to samples with autograd
(`__call__`), and draws with probability `1 - exp(-rate)` from a rate without building a graph
(`rate_sample`, with `rate_derivative` the surrogate derivative of the sample w.r.t. the rate),
for simulators that write their own adjoint. With the same noise the hard estimators give the
same forward values (`u < p`), so estimators differ only in their gradients.

`EventWeighted` (the default) credits each realised event with d log p; over an epidemic it is biased,
d E[total infections]/dβ 1.40–1.69× the finite difference on the toy population (README; 2 pre-symptomatic
days), because a realised infection is credited with its whole effect against "never infected". The
straight-through estimators are biased per draw, and over the epidemic too (`StraightThroughGumbel` 0.26–0.88×,
`StraightThrough` 0.09–0.37× on the same problem): at temperature 1, E_u[d draw / d rate] of
`StraightThroughGumbel` is 7× dp/d rate at p = 10⁻⁴ and 0.67× at p = 0.5, which favours layers that spread
many small infection probabilities. Unbiased derivatives: `diffabm.models.epidemic.derivatives`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

RATE_RANGE = (1e-12, 30.0)  # rates outside have (numerically) zero surrogate derivative


def logistic_noise(u: Tensor) -> Tensor:
    """Logistic noise `log(1 - u) - log u` (a difference of two Gumbels), so `logits + noise > 0` iff `u < p`."""
    return torch.log1p(-u) - torch.log(u)


def rate_to_logits(rate: Tensor) -> Tensor:
    """Logits of the event probability `1 - exp(-rate)` of a Poisson process over one step."""
    return torch.log(torch.expm1(rate.clamp(*RATE_RANGE)))


def hard_sample(rate: Tensor, u: Tensor) -> Tensor:
    """1 where `u < 1 - exp(-rate)`, else 0."""
    return (u < -torch.expm1(-rate)).to(rate.dtype)


def hard_bernoulli(logits: Tensor, u: Tensor) -> Tensor:
    """1 where `u < sigmoid(logits)`, else 0: the value of every hard estimator (`_HardSample`), without a surrogate
    for a gradient (for simulations that need none)."""
    return (u < torch.sigmoid(logits)).to(logits.dtype)


def _relaxed_derivative(rate: Tensor, u: Tensor, temperature: float) -> Tensor:
    """d/d rate of sigmoid((logit p(rate) + logistic(u)) / τ), p(rate) = 1 - exp(-rate)."""
    clamped = rate.clamp(*RATE_RANGE)
    soft = torch.sigmoid((torch.log(torch.expm1(clamped)) + logistic_noise(u)) / temperature)
    inside = (rate >= RATE_RANGE[0]) & (rate <= RATE_RANGE[1])
    return soft * (1 - soft) / temperature / -torch.expm1(-clamped) * inside


class _HardSample:
    """Hard samples `u < p` in the forward pass; subclasses give the surrogate that carries the gradient."""

    relaxed = False
    draws_without_event_differentiable = True  # a draw of 0 carries a derivative (its would-be event's effect)

    def __call__(self, logits: Tensor, u: Tensor) -> Tensor:
        probs = torch.sigmoid(logits)
        hard = (u < probs).to(probs.dtype)
        # Always through the surrogate (its value is `hard`): a shortcut on `requires_grad` would drop the
        # tangents of forward mode (`torch.func.jvp`), whose inputs do not require grad.
        return self.with_gradient(hard, logits, probs, u)

    def with_gradient(self, hard: Tensor, logits: Tensor, probs: Tensor, u: Tensor) -> Tensor:
        """`hard` in value, with the estimator's gradient with respect to `logits`."""
        raise NotImplementedError

    def rate_sample(self, rate: Tensor, u: Tensor) -> Tensor:
        return hard_sample(rate, u)


@dataclass(frozen=True)
class StraightThroughGumbel(_HardSample):
    """Straight-through Gumbel-softmax (Jang, Gu & Poole 2017): hard sample, relaxed gradient."""

    temperature: float = 1.0

    def with_gradient(self, hard: Tensor, logits: Tensor, probs: Tensor, u: Tensor) -> Tensor:
        soft = torch.sigmoid((logits + logistic_noise(u)) / self.temperature)
        return hard + (soft - soft.detach())

    def rate_derivative(self, rate: Tensor, u: Tensor) -> Tensor:
        return _relaxed_derivative(rate, u, self.temperature)


@dataclass(frozen=True)
class GumbelSoftmax:
    """Relaxed Bernoulli (binary Concrete; Maddison, Mnih & Teh 2017): soft samples in (0, 1)."""

    temperature: float = 0.1
    relaxed = True  # states are soft: simulators must not assume 0/1 values
    draws_without_event_differentiable = True

    def __call__(self, logits: Tensor, u: Tensor) -> Tensor:
        return torch.sigmoid((logits + logistic_noise(u)) / self.temperature)

    def rate_sample(self, rate: Tensor, u: Tensor) -> Tensor:
        return self(rate_to_logits(rate), u)

    def rate_derivative(self, rate: Tensor, u: Tensor) -> Tensor:
        return _relaxed_derivative(rate, u, self.temperature)


@dataclass(frozen=True)
class StraightThrough(_HardSample):
    """Straight-through estimator (Bengio, Léonard & Courville 2013): gradient of the mean `p`."""

    def with_gradient(self, hard: Tensor, logits: Tensor, probs: Tensor, u: Tensor) -> Tensor:
        return hard + (probs - probs.detach())

    def rate_derivative(self, rate: Tensor, u: Tensor) -> Tensor:
        return torch.exp(-rate)


@dataclass(frozen=True)
class EventWeighted(_HardSample):
    """Hard sample x weighted p / p̂ (value 1): only realised events carry gradient, each ∇ log p.

    E[x ∇ log p · Δ] = ∇p · Δ for an event whose effect Δ is the pathwise adjoint of the realised
    event, so every realised infection is attributed to the parameters by their share of its
    force (the likelihood-ratio weighting of realised events; Glasserman 2003, §7.3; the seeding
    weight of papers.md §2 applied to every draw). The weights are bounded: d log p / d rate ≤ 1/rate.
    """

    draws_without_event_differentiable = False  # x p / p̂ is 0 where x is

    def with_gradient(self, hard: Tensor, logits: Tensor, probs: Tensor, u: Tensor) -> Tensor:
        # p / p̂ where the event happened (then p > u > 0) and 0 elsewhere: dividing by p̂ there too made 0 / 0 = NaN
        # in value and gradient where p underflows (logits below about -88 in float32)
        return hard * probs / torch.where(hard > 0, probs.detach(), 1.0)

    def rate_derivative(self, rate: Tensor, u: Tensor) -> Tensor:
        clamped = rate.clamp(*RATE_RANGE)
        return hard_sample(rate, u) / torch.expm1(clamped)


BernoulliEstimator = StraightThroughGumbel | GumbelSoftmax | StraightThrough | EventWeighted
