"""Vaccination: two doses from a real daily dose series, given to agents by their uptake, with dose-specific
efficacy against infection and against severe disease, optional waning, and the interval between doses a setting.

Who: agent i takes a first dose with probability u1_i and completes the primary course with probability
u2_i ≤ u1_i (its SA2 x age group's uptake, `population.vaccine_uptake`; one uniform decides both, so the
second-dose takers are among the first-dose takers). When: its first dose falls on a day drawn from the
national first-dose series (the share of all first doses given by each day; agents aged 5-11 only from
`children_from`, the day children became eligible), and its second dose `interval_days` later (the
interval between doses, e.g. 3, 6 or 12 weeks: the counterfactual in Hogan et al. 2021, and the 3-to-6-week
change NZ made in August 2021). Not modelled: the age priority of the roll-out (every eligible agent draws
from the same national timing) and third doses.

Effect: from `effect_delay_days` after a dose, the agent's susceptibility is multiplied by 1 − e_inf,d (e the
efficacy of its latest dose d, halving every `waning_half_life_days` if set), and, if infected, its
hospitalisation (and so its death) is kept with probability 1 − e_sev,d, d the dose at infection: the
efficacy against severe disease *given infection* (the overall protection against admission is
1 − (1 − e_inf)(1 − e_sev); e.g. Delta with two doses of BNT162b2, e_inf ≈ 0.8 and overall ≈ 0.95,
Andrews et al. 2022, NEJM 386:340). A thinned admission keeps the infectious period drawn for it.
Gradients reach the four efficacies (`VACCINATION_PARAMETERS`) through the susceptibility (pathwise, through
the transmission days' adjoint) and through the severe-disease draws (the model's Bernoulli estimator).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

VACCINATION_PARAMETERS = {
    f"efficacy_{against}_dose{dose}": "unit_interval" for against in ("infection", "severe") for dose in (1, 2)
}
CHILD_AGES = (5, 11)  # ages that became eligible only from `children_from`
DOSE_COLUMNS = ("Date", "First doses")


@dataclass(frozen=True)
class Vaccination:
    """A vaccination programme: first-dose days (offsets from the study's day 0) and their counts, the
    interval between doses, the delay until a dose protects, the waning half-life (None: no waning) and the
    day from which children are eligible."""

    first_dose_day: np.ndarray
    first_doses: np.ndarray
    interval_days: int
    effect_delay_days: int = 14
    waning_half_life_days: float | None = None
    children_from: int = -(1 << 30)


def read_first_doses(path: str | Path, start: dt.date, field: str) -> tuple[np.ndarray, np.ndarray]:
    """(days from `start`, first doses) of the Ministry of Health's national daily dose series; a missing file or
    column, a bad date, or a count that is not a whole number >= 0 is a ValueError naming file, field and value."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{field}: {path} does not exist")
    table = pd.read_csv(path, dtype=str, encoding="utf-8-sig")
    missing = [column for column in DOSE_COLUMNS if column not in table]
    if missing:
        raise ValueError(f"{path}: column '{missing[0]}' is missing")
    dates = pd.to_datetime(table["Date"], errors="coerce", format="%Y-%m-%d")
    if dates.isna().any():
        raise ValueError(f"{path}: field 'Date' has value {table['Date'][dates.isna()].iloc[0]!r}; expected YYYY-MM-DD")
    counts = pd.to_numeric(table["First doses"].str.replace(",", ""), errors="coerce")
    bad = ~np.isfinite(counts) | (counts < 0) | (counts != counts.round())
    if bad.any():
        raise ValueError(
            f"{path}: field 'First doses' has value {table['First doses'][bad].iloc[0]!r} "
            f"({table['Date'][bad].iloc[0]}); expected a whole number >= 0"
        )
    if counts.sum() <= 0:
        raise ValueError(f"{path}: field 'First doses' sums to 0; no doses to give")
    days = (dates - pd.Timestamp(start)).dt.days
    return np.array(days, dtype=np.int64), np.array(counts, dtype=np.float64)  # writable copies


def first_dose_distribution(
    vaccination: Vaccination, child: bool, device: torch.device | str
) -> tuple[Tensor, Tensor] | None:
    """The series' days (S,), in order, and the share (S,) of all first doses open to an adult (or a child: from
    `children_from` on) given by each of them, cumulative; None if no dose is open to it."""
    order = np.argsort(vaccination.first_dose_day, kind="stable")
    days = torch.as_tensor(vaccination.first_dose_day[order], device=device)
    counts = torch.as_tensor(vaccination.first_doses[order], device=device)
    if child:
        counts = counts * (days >= vaccination.children_from)
    cumulative = counts.cumsum(0)
    return None if cumulative[-1] <= 0 else (days, cumulative / cumulative[-1])


def first_dose_share_by(vaccination: Vaccination, child: bool, day: Tensor) -> Tensor:
    """The share of an eligible adult's (or child's) first doses given by each `day` (any shape): 0 before the first."""
    distribution = first_dose_distribution(vaccination, child, day.device)
    if distribution is None:
        return torch.zeros(day.shape, dtype=torch.float64, device=day.device)
    days, cumulative = distribution
    index = torch.searchsorted(days, day.contiguous(), right=True) - 1
    return torch.where(index >= 0, cumulative[index.clamp(min=0)], 0.0)


def dose_days(
    vaccination: Vaccination, uptake: Tensor, child: Tensor, take: Tensor, timing: Tensor, never: int
) -> tuple[Tensor, Tensor]:
    """Each agent's first- and second-dose day (B, N), `never` for doses not taken, from its uptake (N, 2) of dose
    1 and 2, whether it is a child (N,), and uniforms (B, N) deciding whether (`take`) and when (`timing`)."""

    def day_of(is_child: bool) -> Tensor:
        distribution = first_dose_distribution(vaccination, is_child, uptake.device)
        if distribution is None:
            return torch.full(timing.shape, never, dtype=torch.int32, device=uptake.device)
        days, cumulative = distribution
        index = torch.searchsorted(cumulative, timing.double().contiguous())
        return days[index.clamp_(max=days.numel() - 1)].to(torch.int32)

    first = torch.where(child, day_of(True), day_of(False))
    first = torch.where(take < uptake[:, 0], first, never)
    second = torch.where((take < uptake[:, 1]) & (first != never), first + vaccination.interval_days, never)
    return first, second


@dataclass
class VaccineProtection:
    """One simulation's doses (B, N) and efficacies (B, 2) per dose, against infection and severe disease."""

    vaccination: Vaccination
    first: Tensor
    second: Tensor
    efficacy_infection: Tensor
    efficacy_severe: Tensor
    never: int  # the dose day of doses not taken

    def efficacy(self, day: int | Tensor, efficacy: Tensor) -> Tensor:
        """The efficacy (B, N) of each agent's latest effective dose on `day` (an int or per agent (B, N))."""
        delay, half_life = self.vaccination.effect_delay_days, self.vaccination.waning_half_life_days
        since_first, since_second = day - self.first - delay, day - self.second - delay
        second = (since_second >= 0) & (self.second != self.never)
        first = (since_first >= 0) & (self.first != self.never) & ~second
        if half_life is None:
            return efficacy[:, :1] * first + efficacy[:, 1:] * second
        halvings = torch.where(second, since_second, since_first).clamp(min=0) / half_life
        return (efficacy[:, :1] * first + efficacy[:, 1:] * second) * torch.exp2(-halvings)

    def susceptibility_factor(self, day: int) -> Tensor:
        """1 − the efficacy against infection on `day` (B, N)."""
        return 1.0 - self.efficacy(day, self.efficacy_infection)

    def severe_kept(self, infection_day: Tensor, estimate, u: Tensor) -> Tensor:
        """Whether (B, N) an infection on `infection_day` keeps its severe outcome, drawn with probability 1 − e_sev
        by `estimate(logits, u)` (the model's Bernoulli estimator) where a dose protects, else 1."""
        efficacy = self.efficacy(infection_day, self.efficacy_severe)
        kept = estimate(torch.logit(1.0 - efficacy, eps=1e-6), u)
        return torch.where(efficacy > 0, kept, torch.ones_like(kept))
