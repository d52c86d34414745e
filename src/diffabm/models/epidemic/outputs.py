"""The epidemic's outputs: the daily series of a simulation (`OBSERVABLES`, returned as an `EpidemicOutput`)
and how they are counted, as histograms over days of each agent's infection day and drawn course."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

STAGES = (
    "susceptible",
    "exposed",
    "infectious_asymptomatic",
    "infectious_symptomatic",
    "hospitalised",
    "recovered",
    "dead",
)
OBSERVABLES = {  # name: dimensions after `draw`
    "new_infections": ("time",),
    "cases": ("time",),
    "hospitalisations": ("time",),
    "deaths": ("time",),
    "stage_counts": ("time", "stage"),
    "infections_by_age": ("time", "age_group"),
    "infections_by_setting": ("time", "setting"),
}


@dataclass
class EpidemicOutput(Mapping):
    """Daily series for B draws: counts (B, T), stage counts (B, T, S), infections by age (B, T, A)
    and by setting, the contact layer where they happened (B, T, L; the seeds of day 0 have none).
    A mapping from each name of `OBSERVABLES` to its tensor."""

    new_infections: Tensor
    cases: Tensor
    hospitalisations: Tensor
    deaths: Tensor
    stage_counts: Tensor
    infections_by_age: Tensor
    infections_by_setting: Tensor

    def __getitem__(self, name: str) -> Tensor:
        if name not in OBSERVABLES:
            raise KeyError(name)
        return getattr(self, name)

    def __iter__(self):
        return iter(OBSERVABLES)

    def __len__(self) -> int:
        return len(OBSERVABLES)


def daily_outputs(new_infections: Tensor, infections_by_setting: Tensor, infected: Tensor, infection_day: Tensor,
                  symptomatic: Tensor, hospitalised: Tensor, dies: Tensor, latent: Tensor, infectious_days: Tensor,
                  stay: Tensor, *, age_band: Tensor, n_bands: int) -> EpidemicOutput:
    """Daily outputs from each agent's infection day and course, as histograms over days.

    Per agent (B, N): `infected` and the course drawn for it (`symptomatic`, `hospitalised`, `dies`,
    and the days `latent`, `infectious_days` and hospital `stay`); `age_band` (N,) of `n_bands`.
    `new_infections` (B, T) and `infections_by_setting` (B, T, L) are counted during the days.
    """
    draws, days = new_infections.shape
    n_agents = age_band.shape[0]
    infection_day, latent, infectious_days, stay = (x.long() for x in (infection_day, latent, infectious_days, stay))

    def daily(day: Tensor, weight: Tensor) -> Tensor:
        index = day.clamp(max=days)
        return weight.new_zeros(draws, days + 1).scatter_add_(1, index, weight)[:, :days]

    onset = infection_day + latent
    end = onset + infectious_days
    discharge = end + stay
    symptomatic_weight = infected * symptomatic
    admitted = symptomatic_weight * hospitalised
    exposed_in, exposed_out = daily(infection_day, infected), daily(onset, infected)
    asymptomatic_in, asymptomatic_out = daily(onset, infected - symptomatic_weight), \
        daily(end, infected - symptomatic_weight)
    cases, symptomatic_out = daily(onset, symptomatic_weight), daily(end, symptomatic_weight)
    hospitalisations, discharged = daily(end, admitted), daily(discharge, admitted)
    deaths = daily(discharge, admitted * dies)
    recovered_in = asymptomatic_out + (symptomatic_out - hospitalisations) + (discharged - deaths)
    stage_counts = torch.stack(
        [
            n_agents - exposed_in.cumsum(1),
            (exposed_in - exposed_out).cumsum(1),
            (asymptomatic_in - asymptomatic_out).cumsum(1),
            (cases - symptomatic_out).cumsum(1),
            (hospitalisations - discharged).cumsum(1),
            recovered_in.cumsum(1),
            deaths.cumsum(1),
        ],
        dim=-1,
    )
    index = (infection_day.clamp(max=days) * n_bands + age_band).clamp(max=days * n_bands)
    by_age = infected.new_zeros(draws, days * n_bands + 1).scatter_add_(1, index, infected)
    return EpidemicOutput(
        new_infections=new_infections,
        cases=cases,
        hospitalisations=hospitalisations,
        deaths=deaths,
        stage_counts=stage_counts,
        infections_by_age=by_age[:, : days * n_bands].reshape(draws, days, n_bands),
        infections_by_setting=infections_by_setting,
    )
