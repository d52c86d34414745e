"""The epidemic's outputs: the daily series of a simulation (`OBSERVABLES`, returned as an `EpidemicOutput`)
and how they are counted, as histograms over days of each agent's infection day and drawn course."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from diffabm.models.autodiff import vmap_tangents_only
from diffabm.models.epidemic import fused

STAGES = (
    "susceptible",
    "exposed",
    "infectious_asymptomatic",
    "infectious_symptomatic",
    "hospitalised",
    "recovered",
    "dead",
)
OBSERVABLES = {  # name: dimensions after `draw`; grouped observables (`grouped_observables`) come besides
    "new_infections": ("time",),
    "cases": ("time",),
    "hospitalisations": ("time",),
    "deaths": ("time",),
    "stage_counts": ("time", "stage"),
    "infections_by_setting": ("time", "setting"),
}
EVENTS = ("infections", "cases", "hospitalisations", "deaths")  # counted per group of agents
GROUPINGS = {
    "age": "age_group",
    "ethnicity": "ethnicity",
    "region": "region",  # name in observables: dimension
    "district": "district",
}


def grouped_observables(groupings: Sequence[str]) -> dict[str, tuple[str, str]]:
    """`<event>_by_<grouping>` (e.g. `deaths_by_ethnicity`): dimensions (time, group) for each event and grouping."""
    return {f"{event}_by_{grouping}": ("time", GROUPINGS[grouping]) for event in EVENTS for grouping in groupings}


class EpidemicOutput(dict):
    """Daily series for B draws by observable name: counts (B, T), stage counts (B, T, S), infections by setting,
    the contact layer where they happened (B, T, L; the seeds of day 0 have none), and each event by group of
    agents (B, T, G). Series are also attributes (`output.new_infections`)."""

    def __getattr__(self, name: str) -> Tensor:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _histogram_index(day: Tensor, group: Tensor, days: int, groups: int) -> Tensor:
    """Flat (day, group) cell of each agent (B, N); days past the last go to one overflow cell."""
    return (day.clamp(max=days) * groups + group).clamp(max=days * groups)


class _Histogram(torch.autograd.Function):
    """Counts (B, days, groups) of `weight` (B, N) by each agent's `day` (B, N) and `group` (N,). Saves the day and
    group (tensors that live on anyway), not the scatter index, which would cost 8 bytes per agent for each of
    the ~20 histograms of a simulation in reverse mode; linear in `weight`, so its jvp is itself."""

    vmap = staticmethod(vmap_tangents_only)

    @staticmethod
    def forward(weight: Tensor, day: Tensor, group: Tensor, days: int, groups: int) -> Tensor:
        index = _histogram_index(day, group, days, groups)
        # out of place: its jvp passes the tangents, batched under `torch.func.vmap` where the zeros are not
        counts = weight.new_zeros(weight.shape[0], days * groups + 1).scatter_add(1, index, weight)
        return counts[:, : days * groups].reshape(weight.shape[0], days, groups)

    @staticmethod
    def setup_context(ctx, inputs: tuple, output: Tensor) -> None:
        _, day, group, ctx.days, ctx.groups = inputs
        ctx.save_for_backward(day, group)
        ctx.save_for_forward(day, group)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None, None]:
        day, group = ctx.saved_tensors
        flat = torch.cat([grad.reshape(grad.shape[0], -1), grad.new_zeros(grad.shape[0], 1)], dim=1)
        return flat.gather(1, _histogram_index(day, group, ctx.days, ctx.groups)), None, None, None, None

    @staticmethod
    def jvp(ctx, weight_tangent: Tensor, *_) -> Tensor:
        day, group = ctx.saved_tensors
        return _Histogram.forward(weight_tangent, day, group, ctx.days, ctx.groups)


def daily_outputs(
    new_infections: Tensor,
    infections_by_setting: Tensor,
    infected: Tensor,
    infection_day: Tensor,
    symptomatic: Tensor,
    hospitalised: Tensor,
    dies: Tensor,
    latent: Tensor,
    infectious_days: Tensor,
    stay: Tensor,
    *,
    groupings: Mapping[str, tuple[Tensor, int]],
    compiled: bool = False,
) -> EpidemicOutput:
    """Daily outputs from each agent's infection day and course, as histograms over days.

    Per agent (B, N): `infected` and the course drawn for it (`symptomatic`, `hospitalised`, `dies`,
    and the days `latent`, `infectious_days` and hospital `stay`); `groupings`: name: (group of each agent (N,),
    number of groups). `new_infections` (B, T) and `infections_by_setting` (B, T, L) are counted during the days.
    `compiled`: count in one compiled pass over the agents (`fused.event_counts`; no gradients, and exact only for
    weights of 0 and 1, as hard estimators draw them) instead of a differentiable histogram per series.
    """
    days = new_infections.shape[1]
    n_agents = infected.shape[1]
    count = fused.event_counts if compiled else _histograms  # the same counts: compiled, or differentiable
    counts, by_group = count(
        days, infection_day, latent, infectious_days, stay, infected, symptomatic, hospitalised, dies, groupings
    )
    recovered_in = (
        counts["asymptomatic_out"]
        + (counts["symptomatic_out"] - counts["hospitalisations"])
        + (counts["discharged"] - counts["deaths"])
    )
    stage_counts = torch.stack(
        [
            n_agents - counts["exposed_in"].cumsum(1),
            (counts["exposed_in"] - counts["exposed_out"]).cumsum(1),
            (counts["asymptomatic_in"] - counts["asymptomatic_out"]).cumsum(1),
            (counts["cases"] - counts["symptomatic_out"]).cumsum(1),
            (counts["hospitalisations"] - counts["discharged"]).cumsum(1),
            recovered_in.cumsum(1),
            counts["deaths"].cumsum(1),
        ],
        dim=-1,
    )
    return EpidemicOutput(
        new_infections=new_infections,
        cases=counts["cases"],
        hospitalisations=counts["hospitalisations"],
        deaths=counts["deaths"],
        stage_counts=stage_counts,
        infections_by_setting=infections_by_setting,
        **{
            f"{event}_by_{grouping}": by_group[e][k]
            for e, event in enumerate(EVENTS)
            for k, grouping in enumerate(groupings)
        },
    )


def _histograms(
    days: int,
    infection_day: Tensor,
    latent: Tensor,
    infectious_days: Tensor,
    stay: Tensor,
    infected: Tensor,
    symptomatic: Tensor,
    hospitalised: Tensor,
    dies: Tensor,
    groupings: Mapping[str, tuple[Tensor, int]],
) -> tuple[dict[str, Tensor], list[list[Tensor]]]:
    """The histograms (B, days) of each agent's stage changes by name, and of each of `EVENTS` by group
    (B, days, groups) per grouping: differentiable in the weights (`_Histogram`)."""
    infection_day, latent, infectious_days, stay = (x.long() for x in (infection_day, latent, infectious_days, stay))

    def daily(day: Tensor, weight: Tensor) -> Tensor:
        return _Histogram.apply(weight, day, weight.new_zeros((), dtype=torch.long), days, 1)[..., 0]

    onset = infection_day + latent
    end = onset + infectious_days
    discharge = end + stay
    symptomatic_weight = infected * symptomatic
    asymptomatic_weight = infected - symptomatic_weight
    admitted = symptomatic_weight * hospitalised
    died = admitted * dies
    counts = {
        "exposed_in": daily(infection_day, infected),
        "exposed_out": daily(onset, infected),
        "asymptomatic_in": daily(onset, asymptomatic_weight),
        "asymptomatic_out": daily(end, asymptomatic_weight),
        "cases": daily(onset, symptomatic_weight),
        "symptomatic_out": daily(end, symptomatic_weight),
        "hospitalisations": daily(end, admitted),
        "discharged": daily(discharge, admitted),
        "deaths": daily(discharge, died),
    }
    events = ((infection_day, infected), (onset, symptomatic_weight), (end, admitted), (discharge, died))
    by_group = [
        [_Histogram.apply(weight, day, group, days, groups) for group, groups in groupings.values()]
        for day, weight in events
    ]
    return counts, by_group
