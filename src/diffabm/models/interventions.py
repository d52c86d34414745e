"""Interventions as data: contact multipliers per layer and day, and isolation of symptomatic agents."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Interventions:
    """What the simulator consumes: a (T, L) or (B, T, L) contact multiplier and isolation settings."""

    contact_multiplier: Tensor
    isolation_compliance: float = 0.0
    isolation_delay: int = 0
    isolation_layers: tuple[str, ...] = ()

    @classmethod
    def none(cls, days: int, layers: Sequence[str]) -> Interventions:
        return cls(torch.ones(days, len(layers)))


def _day(value: int | str | dt.date, start_date: dt.date, field: str) -> int:
    """A day offset from an int or an ISO date relative to `start_date`."""
    if isinstance(value, int):
        return value
    try:
        date = value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))
    except ValueError as err:
        raise ValueError(f"intervention field '{field}': {value!r} is neither a day number nor an ISO date") from err
    return (date - start_date).days


def build_interventions(
    specs: Sequence[Mapping], days: int, layers: Sequence[str], start_date: dt.date
) -> Interventions:
    """Turn a list of intervention specs (config data) into simulator tensors.

    Kinds: `contact_multiplier` (layers, start, end, multiplier) multiplies contacts of the
    layers on days [start, end); `isolation` (compliance, delay_days, layers) makes that share
    of symptomatic agents stop contacts in the given layers from `delay_days` after onset.
    """
    multiplier = torch.ones(days, len(layers))
    isolation: dict = {}
    for index, spec in enumerate(specs):
        kind = spec.get("kind")
        where = f"interventions[{index}]"
        unknown_layers = [layer for layer in spec.get("layers", []) if layer not in layers]
        if unknown_layers:
            raise ValueError(f"{where}: unknown layers {unknown_layers}; model layers are {list(layers)}")
        if kind == "contact_multiplier":
            value = float(spec["multiplier"])
            if value < 0:
                raise ValueError(f"{where}: field 'multiplier' is {value}, must be >= 0")
            start = max(_day(spec.get("start", 0), start_date, "start"), 0)
            end = min(_day(spec.get("end", days), start_date, "end"), days)
            columns = [layers.index(layer) for layer in spec.get("layers", layers)]
            multiplier[start:end, columns] *= value
        elif kind == "isolation":
            if isolation:
                raise ValueError(f"{where}: only one isolation intervention is allowed")
            compliance = float(spec.get("compliance", 1.0))
            if not 0.0 <= compliance <= 1.0:
                raise ValueError(f"{where}: field 'compliance' is {compliance}, must be in [0, 1]")
            delay = int(spec.get("delay_days", 0))
            if delay < 0:
                raise ValueError(f"{where}: field 'delay_days' is {delay}, must be >= 0")
            isolating = tuple(spec.get("layers", [layer for layer in layers if layer != "household"]))
            isolation = dict(isolation_compliance=compliance, isolation_delay=delay, isolation_layers=isolating)
        else:
            raise ValueError(f"{where}: unknown kind {kind!r}; expected 'contact_multiplier' or 'isolation'")
    return Interventions(multiplier, **isolation)
