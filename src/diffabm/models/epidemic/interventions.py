"""Interventions as data: contact multipliers per layer and day, isolation of symptomatic agents, and vaccination."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from diffabm.models.epidemic.vaccination import Vaccination, read_first_doses


@dataclass
class Interventions:
    """What the simulator consumes: a (T, L) or (B, T, L) contact multiplier and isolation settings."""

    contact_multiplier: Tensor
    isolation_compliance: float = 0.0
    isolation_delay: int = 0
    isolation_layers: tuple[str, ...] = ()
    vaccination: Vaccination | None = None

    @classmethod
    def none(cls, days: int, layers: Sequence[str]) -> Interventions:
        return cls(torch.ones(days, len(layers)))


FIELDS = {  # kind: (required fields, optional fields); `name` (for counterfactual scenarios) and `source` document
    "contact_multiplier": ({"kind", "layers", "start", "multiplier"}, {"end", "name", "source"}),
    "isolation": ({"kind", "compliance", "delay_days"}, {"layers", "name", "source"}),
    "vaccination": (
        {"kind", "doses", "interval_days"},
        {"effect_delay_days", "waning_half_life_days", "children_from", "name", "source"},
    ),
}


class InterventionError(ValueError):
    """An intervention spec that would not act as written: names its index, field and value."""

    def __init__(self, index: int, field: str, value: object, problem: str):
        super().__init__(f"interventions[{index}].{field} is {value!r}: {problem}")


def _number(index: int, field: str, value: object, low: float, high: float = float("inf")) -> float:
    """A finite number in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        bound = f"in [{low:g}, {high:g}]" if high < float("inf") else f">= {low:g}"
        raise InterventionError(index, field, value, f"must be a number {bound}")
    return float(value)


def _day(index: int, field: str, value: object, start_date: dt.date) -> int:
    """A day offset from an int or an ISO date relative to `start_date`."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        date = value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))
    except ValueError as err:
        raise InterventionError(index, field, value, "neither a day number nor an ISO date") from err
    return (date - start_date).days


def _check_fields(index: int, spec: Mapping) -> str:
    """The spec's kind, after checking it has every required field and no unknown one."""
    kind = spec.get("kind")
    if kind not in FIELDS:
        raise InterventionError(index, "kind", kind, f"unknown kind; expected one of {sorted(FIELDS)}")
    required, optional = FIELDS[kind]
    missing, unknown = sorted(required - set(spec)), sorted(set(spec) - required - optional)
    if missing:
        raise InterventionError(index, missing[0], None, f"field '{missing[0]}' of a {kind} is required")
    if unknown:
        raise InterventionError(
            index, unknown[0], spec[unknown[0]], f"unknown field of a {kind}; known: {sorted(required | optional)}"
        )
    return kind


def _layers(index: int, spec: Mapping, layers: Sequence[str], default: Sequence[str]) -> list[str]:
    """The spec's layers: a non-empty list of model layers."""
    chosen = spec.get("layers", list(default))
    if isinstance(chosen, str) or not isinstance(chosen, Sequence) or not chosen:
        raise InterventionError(index, "layers", chosen, "must be a non-empty list of layers")
    unknown = [layer for layer in chosen if layer not in layers]
    if unknown:
        raise InterventionError(
            index, "layers", list(chosen), f"unknown layers {unknown}; model layers are {list(layers)}"
        )
    return list(chosen)


def _whole_days(index: int, spec: Mapping, field: str, low: int, default: int | None = None) -> int:
    """A whole number of days >= low (`default` when the field is absent)."""
    value = spec.get(field, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InterventionError(index, field, value, f"must be a whole number of days >= {low}")
    return value


def _vaccination(index: int, spec: Mapping, start_date: dt.date) -> Vaccination:
    """A vaccination programme from its spec (the dose series read from `doses`)."""
    first_dose_day, first_doses = read_first_doses(spec["doses"], start_date, f"interventions[{index}].doses")
    half_life = spec.get("waning_half_life_days")
    children_from = spec.get("children_from")
    return Vaccination(
        first_dose_day,
        first_doses,
        _whole_days(index, spec, "interval_days", 1),
        _whole_days(index, spec, "effect_delay_days", 0, 14),
        None if half_life is None else _number(index, "waning_half_life_days", half_life, 1.0),
        **({} if children_from is None else {"children_from": _day(index, "children_from", children_from, start_date)}),
    )


def build_interventions(
    specs: Sequence[Mapping], days: int, layers: Sequence[str], start_date: dt.date
) -> Interventions:
    """Turn a list of intervention specs (config data) into simulator tensors.

    Kinds: `contact_multiplier` (layers, start, multiplier; optional end, else to the last day)
    multiplies contacts of the layers on days [start, end), given as day numbers or ISO dates
    within the simulated period; `isolation` (compliance, delay_days; optional layers, else all but
    `household`) makes that share of symptomatic agents stop contacts in the layers from
    `delay_days` after onset; `vaccination` (doses: the daily dose series file, interval_days; optional
    effect_delay_days (14), waning_half_life_days (none), children_from (date)) gives two doses
    (`diffabm.models.epidemic.vaccination`). Anything that would not act as written (an unknown or missing field,
    a period outside the simulation, an end before its start) is an `InterventionError`.
    """
    multiplier = torch.ones(days, len(layers))
    isolation: dict = {}
    vaccination = None
    for index, spec in enumerate(specs):
        kind = _check_fields(index, spec)
        if kind == "contact_multiplier":
            value = _number(index, "multiplier", spec["multiplier"], 0.0)
            start = _day(index, "start", spec["start"], start_date)
            if not 0 <= start < days:
                raise InterventionError(
                    index, "start", spec["start"], f"day {start} is outside the simulated days 0..{days - 1}"
                )
            end = _day(index, "end", spec["end"], start_date) if "end" in spec else days
            if end <= start:
                raise InterventionError(index, "end", spec["end"], f"day {end} is not after its start, day {start}")
            if end > days:
                raise InterventionError(
                    index,
                    "end",
                    spec["end"],
                    f"day {end} is after the simulated days 0..{days - 1} (omit `end` to last to the end)",
                )
            columns = [layers.index(layer) for layer in _layers(index, spec, layers, layers)]
            multiplier[start:end, columns] *= value
        elif kind == "vaccination":
            if vaccination is not None:
                raise InterventionError(index, "kind", kind, "only one vaccination intervention is allowed")
            vaccination = _vaccination(index, spec, start_date)
        else:
            if isolation:
                raise InterventionError(index, "kind", kind, "only one isolation intervention is allowed")
            compliance = _number(index, "compliance", spec["compliance"], 0.0, 1.0)
            delay = _whole_days(index, spec, "delay_days", 0)
            isolating = tuple(_layers(index, spec, layers, [layer for layer in layers if layer != "household"]))
            isolation = dict(isolation_compliance=compliance, isolation_delay=delay, isolation_layers=isolating)
    return Interventions(multiplier, **isolation, vaccination=vaccination)
