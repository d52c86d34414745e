"""Observed series from real records: the study's `observed:` section names a record and how to read it.

Kind `nz_reported_cases`: daily reported COVID-19 cases summed over District Health Boards (`locations`), and
with `by_district: true` also per DHB (observable `reported_cases_by_district`, for a population whose agents
carry their district), from the Ministry of Health's `cases_daily_by_location.csv`
(github.com/minhealthnz/nz-covid-data, CC BY-SA 4.0; a
copy with its provenance in data/nz/), for the simulated days from `start_date`. A missing file, location or
day, or a count that is not a whole number >= 0, is a ValueError naming the file, the field and the value.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

KINDS = ("nz_reported_cases",)


def nz_reported_cases(path: str | Path, locations: Sequence[str], start: dt.date, days: int) -> np.ndarray:
    """Daily reported cases (days, locations) of the `locations`, from `start` on."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"observed.file: {path} does not exist")
    table = pd.read_csv(path, dtype={"location": str}, encoding="utf-8-sig")
    missing = [column for column in ("date", "location", "cases") if column not in table]
    if missing:
        raise ValueError(f"{path}: column '{missing[0]}' is missing")
    unknown = [location for location in locations if location not in set(table["location"])]
    if unknown:
        raise ValueError(f"{path}: field 'location' has no rows for observed.locations value {unknown[0]!r}")
    chosen = table[table["location"].isin(list(locations))]
    cases = pd.to_numeric(chosen["cases"], errors="coerce")
    bad = ~np.isfinite(cases) | (cases < 0) | (cases != cases.round())
    if bad.any():
        row = chosen[bad.to_numpy()].iloc[0]
        raise ValueError(
            f"{path}: field 'cases' has value {row['cases']!r} ({row['location']}, {row['date']}); "
            "expected a whole number >= 0"
        )
    dates = [(start + dt.timedelta(days=k)).isoformat() for k in range(days)]
    daily = chosen.assign(cases=cases).pivot_table(index="date", columns="location", values="cases", aggfunc="sum")
    daily = daily.reindex(index=dates, columns=list(locations))
    if daily.isna().any().any():
        date, location = daily.stack(future_stack=True).loc[lambda s: s.isna()].index[0]
        raise ValueError(
            f"{path}: field 'date' has no row for {date} at {location!r} (the study simulates "
            f"{dates[0]} .. {dates[-1]})"
        )
    return daily.to_numpy(dtype=float)


def read_record(settings: Mapping, start: dt.date, days: int) -> dict[str, np.ndarray]:
    """The observed series of the `observed:` section: observable name -> values (days,), and (days, locations)
    by district."""
    if settings["kind"] == "nz_reported_cases":
        by_location = nz_reported_cases(settings["file"], list(settings["locations"]), start, days)
        return {
            "reported_cases": by_location.sum(axis=1),
            **({"reported_cases_by_district": by_location} if settings.get("by_district") else {}),
        }
    raise ValueError(f"observed.kind is {settings['kind']!r}, expected one of {list(KINDS)}")
