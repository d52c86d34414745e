"""The disease course: the age-dependent natural history an infected agent follows.

Susceptible → exposed → infectious (asymptomatic or symptomatic) → (symptomatic only)
hospitalised → recovered or dead, with age-dependent branch probabilities, log-normal stage
durations in days, and a Gamma-shaped infectiousness profile over days since infection
(Quera-Bofarull et al. 2023, GradABM-JUNE).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

DURATIONS = (
    "latent",
    "asymptomatic_infectious",
    "symptomatic_to_recovery",
    "symptomatic_to_admission",
    "hospital_stay",
)


def _check_finite_in(field: str, values: np.ndarray, low: float, high: float, open_low: bool = False) -> None:
    """Raise a ValueError naming `field`, the position and the value of the first non-finite or out-of-range entry."""
    inside = np.isfinite(values) & (values > low if open_low else values >= low) & (values <= high)
    if not inside.all():
        index = int(np.flatnonzero(~inside.reshape(-1))[0])
        where = f"[{index}]" if values.size > 1 else ""
        bound = f"{'>' if open_low else '>='} {low:g}" + (f" and <= {high:g}" if np.isfinite(high) else "")
        raise ValueError(f"{field}{where} is {values.reshape(-1)[index]:g}, must be finite and {bound}")


@dataclass(frozen=True)
class Duration:
    """A log-normal stage duration in days, given by mean and standard deviation per age band."""

    mean: Sequence[float]
    sd: Sequence[float]


@dataclass(frozen=True)
class DiseaseCourse:
    """Age-dependent natural history; each list has one value per age band (see the config)."""

    age_bands: Sequence[int]
    susceptibility: Sequence[float]
    p_symptomatic: Sequence[float]
    p_hospital_given_symptomatic: Sequence[float]
    p_death_given_hospital: Sequence[float]
    latent: Duration
    asymptomatic_infectious: Duration
    symptomatic_to_recovery: Duration
    symptomatic_to_admission: Duration
    hospital_stay: Duration
    infectiousness_mean: float = 5.5
    infectiousness_sd: float = 2.4
    asymptomatic_relative_infectiousness: float = 0.5
    presymptomatic_days: int = 2
    max_days_since_infection: int = 60

    def __post_init__(self) -> None:
        """Every number finite and in its domain, one value (or one per band) each; errors name field and value."""
        bands = np.asarray(self.age_bands, dtype=float)
        if (
            bands.ndim != 1
            or not bands.size
            or bands[0] != 0
            or np.any(np.diff(bands) <= 0)
            or np.any(bands != np.round(bands))
        ):
            raise ValueError(f"model.course.age_bands is {list(self.age_bands)}, must be whole years rising from 0")
        n_bands = len(bands)
        for name in ("susceptibility", "p_symptomatic", "p_hospital_given_symptomatic", "p_death_given_hospital"):
            values = np.asarray(getattr(self, name), dtype=float)
            if values.shape != (n_bands,):
                raise ValueError(f"model.course.{name} has {values.size} values, expected {n_bands} (age bands)")
            _check_finite_in(f"model.course.{name}", values, 0.0, 1.0 if name.startswith("p_") else np.inf)
        for name in DURATIONS:
            duration = getattr(self, name)
            for part in ("mean", "sd"):
                values = np.asarray(getattr(duration, part), dtype=float)
                if values.size not in (1, n_bands):
                    raise ValueError(
                        f"model.course.{name}.{part} has {values.size} values, expected 1 or {n_bands} (age bands)"
                    )
                _check_finite_in(f"model.course.{name}.{part}", values, 0.0, np.inf, open_low=True)
        for name in ("infectiousness_mean", "infectiousness_sd"):
            _check_finite_in(
                f"model.course.{name}", np.asarray([getattr(self, name)], dtype=float), 0.0, np.inf, open_low=True
            )
        _check_finite_in(
            "model.course.asymptomatic_relative_infectiousness",
            np.asarray([self.asymptomatic_relative_infectiousness], dtype=float),
            0.0,
            1.0,
        )
        if not isinstance(self.presymptomatic_days, int) or self.presymptomatic_days < 0:
            raise ValueError(
                f"model.course.presymptomatic_days is {self.presymptomatic_days!r}, must be a whole number >= 0"
            )
        if not isinstance(self.max_days_since_infection, int) or self.max_days_since_infection < 1:
            raise ValueError(
                f"model.course.max_days_since_infection is {self.max_days_since_infection!r}, "
                f"must be a whole number >= 1"
            )

    def infectiousness_profile(self) -> Tensor:
        """Gamma-shaped infectiousness by day since infection, summing to one."""
        shape = (self.infectiousness_mean / self.infectiousness_sd) ** 2
        rate = self.infectiousness_mean / self.infectiousness_sd**2
        days = torch.arange(self.max_days_since_infection + 1, dtype=torch.float64)
        cdf = torch.special.gammainc(torch.tensor(shape, dtype=torch.float64), rate * days)
        profile = torch.diff(cdf, prepend=torch.zeros(1, dtype=torch.float64))
        profile = torch.cat([profile, torch.zeros(1, dtype=torch.float64)])  # beyond the table: nothing
        return (profile / profile.sum()).float()


def disease_course(config: Mapping) -> DiseaseCourse:
    """A DiseaseCourse from its config mapping (durations given as {mean, sd})."""
    values = dict(config)
    for name in DURATIONS:
        values[name] = Duration(mean=values[name]["mean"], sd=values[name]["sd"])
    return DiseaseCourse(**values)
