"""Case reporting: reported cases are a fraction (the case ascertainment) of symptomatic infections, reported a
delay after symptom onset and counted in people, each agent standing for 1 / `population.scale` of them.

reported(t) = a · (people per agent) · Σ_k w_k cases(t − k), with w the reporting delay's distribution: a gamma
of shape 2 and calibrated mean, discretised on whole days (w_k = F(k + 1) − F(k)) and truncated at 21 days
(the delay convolution of Abbott et al. 2020, "Estimating the time-varying reproduction number of SARS-CoV-2
using national and subnational case counts", Wellcome Open Res 5:112, EpiNow2). Differentiable in the
ascertainment and in the mean delay (through the gamma CDF in its argument), in reverse and forward mode.

Example:
    >>> import torch
    >>> w = delay_weights(torch.tensor([3.0]))
    >>> round(float((w * torch.arange(MAX_DELAY_DAYS)).sum()), 1)  # a discretised mean of about 3 - 1/2 days
    2.5
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from diffabm.models.autodiff import vmap_tangents_only

REPORTING_PARAMETERS = {"ascertainment": "unit_interval", "reporting_delay": "positive"}
DELAY_SHAPE = 2.0
MAX_DELAY_DAYS = 21


class _GammaCDF(torch.autograd.Function):
    """P(a, x), the regularised lower incomplete gamma function of fixed shape a, differentiable in x in reverse and
    forward mode (torch's `igamma` has no forward-mode derivative): dP/dx = x^(a − 1) e^(−x) / Γ(a)."""

    vmap = staticmethod(vmap_tangents_only)

    @staticmethod
    def forward(x: Tensor, shape: float) -> Tensor:
        return torch.special.gammainc(torch.full_like(x, shape), x)

    @staticmethod
    def setup_context(ctx, inputs: tuple[Tensor, float], output: Tensor) -> None:
        x, ctx.shape = inputs
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)

    @staticmethod
    def density(x: Tensor, shape: float) -> Tensor:
        return torch.exp(torch.xlogy(shape - 1.0, x) - x - math.lgamma(shape))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        return grad * _GammaCDF.density(x, ctx.shape), None

    @staticmethod
    def jvp(ctx, x_tangent: Tensor, _) -> Tensor:
        (x,) = ctx.saved_tensors
        return x_tangent * _GammaCDF.density(x, ctx.shape)


def delay_weights(mean_delay: Tensor, days: int = MAX_DELAY_DAYS) -> Tensor:
    """P(delay in [k, k + 1)) for k = 0..days − 1 (B, days), gamma of shape 2 and mean `mean_delay` (B,), renormalised
    over the days kept."""
    edges = torch.arange(days + 1, dtype=mean_delay.dtype, device=mean_delay.device)
    rate = DELAY_SHAPE / mean_delay[:, None]
    cdf = _GammaCDF.apply(edges * rate, DELAY_SHAPE)
    weights = cdf.diff(dim=-1)
    return weights / weights.sum(-1, keepdim=True)


def reported_cases(cases: Tensor, ascertainment: Tensor, mean_delay: Tensor, people_per_agent: float) -> Tensor:
    """Daily reported cases (B, T, ...) in people from the daily symptomatic cases (B, T, ...) of the simulated
    agents (e.g. (B, T, groups) by group)."""
    weights = delay_weights(mean_delay).to(cases.dtype)
    days = weights.shape[-1]
    by_time_last = cases.movedim(1, -1)
    windows = F.pad(by_time_last, (days - 1, 0)).unfold(-1, days, 1)  # (B, ..., T, days): days t − days + 1 .. t
    shape = (weights.shape[0],) + (1,) * (windows.dim() - 2) + (days,)
    delayed = (windows * weights.flip(-1).reshape(shape)).sum(-1).movedim(-1, 1)
    scale = ascertainment.to(cases.dtype).reshape((-1,) + (1,) * (cases.dim() - 1))
    return scale * people_per_agent * delayed
