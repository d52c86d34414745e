"""Schools and kindergartens: children to the nearest institution that takes their age and has room."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from diffabm.population.tables import haversine_km


@dataclass
class Enrolment:
    """Group id per agent in the `school` layer (classes, then kindergarten groups), institution rows, fit."""

    group: np.ndarray
    school_index: np.ndarray
    kindergarten_index: np.ndarray
    fit: pd.DataFrame
    notes: dict[str, float]


def _candidates(
    area_lat: np.ndarray,
    area_lon: np.ndarray,
    demand_area: np.ndarray,
    demand_age: np.ndarray,
    institutions: pd.DataFrame,
    name: str,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per demand group, the k nearest institutions whose age range holds its age (-1 / inf when fewer)."""
    n = demand_area.shape[0]
    candidates = np.full((n, k), -1, dtype=np.int64)
    distances = np.full((n, k), np.inf)
    lat, lon = institutions["latitude"].to_numpy(), institutions["longitude"].to_numpy()
    for age in np.unique(demand_age):
        fits = np.flatnonzero((institutions["age_min"].to_numpy() <= age) & (institutions["age_max"].to_numpy() >= age))
        if not fits.size:
            raise ValueError(f"no institution in the {name} table takes children aged {age}")
        rows = np.flatnonzero(demand_age == age)
        d = haversine_km(
            area_lat[demand_area[rows], None], area_lon[demand_area[rows], None], lat[None, fits], lon[None, fits]
        )
        m = min(k, fits.size)
        nearest = np.argpartition(d, m - 1, axis=1)[:, :m] if m < fits.size else np.tile(np.arange(m), (rows.size, 1))
        near_d = np.take_along_axis(d, nearest, axis=1)
        order = np.argsort(near_d, axis=1, kind="stable")
        candidates[rows, :m] = fits[np.take_along_axis(nearest, order, axis=1)]
        distances[rows, :m] = np.take_along_axis(near_d, order, axis=1)
    return candidates, distances


def _allocate(
    demand: np.ndarray, candidates: np.ndarray, distances: np.ndarray, capacity: np.ndarray
) -> tuple[pd.DataFrame, np.ndarray]:
    """Capacity-constrained assignment: each round every group with children left proposes them to its next
    candidate; institutions accept the nearest proposals up to their remaining room. What is left after the
    candidates are exhausted goes to the nearest candidate regardless of room (overflow).
    Returns rows (group, institution, count) and the overflow per institution."""
    remaining = demand.astype(np.int64).copy()
    room = capacity.astype(np.int64).copy()
    pointer = np.zeros(demand.shape[0], dtype=np.int64)
    parts = []
    for _ in range(candidates.shape[1]):
        current = candidates[np.arange(demand.shape[0]), np.minimum(pointer, candidates.shape[1] - 1)]
        active = np.flatnonzero((remaining > 0) & (pointer < candidates.shape[1]) & (current >= 0))
        if not active.size:
            break
        inst = candidates[active, pointer[active]]
        order = np.lexsort((distances[active, pointer[active]], inst))
        active, inst = active[order], inst[order]
        cumulative = np.cumsum(remaining[active])
        first = np.r_[True, inst[1:] != inst[:-1]]
        before = (
            cumulative - remaining[active] - np.maximum.accumulate(np.where(first, cumulative - remaining[active], 0))
        )
        accepted = np.clip(room[inst] - before, 0, remaining[active])
        parts.append(pd.DataFrame({"group": active, "institution": inst, "count": accepted}).loc[accepted > 0])
        np.subtract.at(room, inst, accepted)
        remaining[active] -= accepted
        pointer[active[remaining[active] > 0]] += 1
    left = np.flatnonzero(remaining > 0)
    overflow = np.bincount(candidates[left, 0], weights=remaining[left], minlength=capacity.shape[0]).astype(np.int64)
    parts.append(pd.DataFrame({"group": left, "institution": candidates[left, 0], "count": remaining[left]}))
    return pd.concat(parts, ignore_index=True), overflow


def _enrol(
    members: np.ndarray,
    area_index: np.ndarray,
    age: np.ndarray,
    area_lat: np.ndarray,
    area_lon: np.ndarray,
    institutions: pd.DataFrame,
    name: str,
    capacity: np.ndarray,
    k: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Institution row per member (children of the same home SA2 and age are allocated together)."""
    key = area_index[members] * 256 + age[members]
    groups, group_of, demand = np.unique(key, return_inverse=True, return_counts=True)
    candidates, distances = _candidates(area_lat, area_lon, groups // 256, groups % 256, institutions, name, k)
    allocation, overflow = _allocate(demand, candidates, distances, capacity)
    allocation = allocation.sort_values("group", kind="stable")
    institution = np.empty(members.shape[0], dtype=np.int64)
    institution[np.lexsort((rng.random(members.shape[0]), group_of))] = np.repeat(
        allocation["institution"].to_numpy(), allocation["count"].to_numpy()
    )
    return institution, overflow


def _split(cell: np.ndarray, age: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Split the members of each cell into ceil(n / size) balanced groups (age-graded); ids from 0."""
    order = np.lexsort((rng.random(cell.shape[0]), age, cell))
    cells, start, n = np.unique(cell[order], return_index=True, return_counts=True)
    k = -(-n // size)
    offset = np.r_[0, np.cumsum(k)]
    position = np.searchsorted(cells, cell[order])
    rank = np.arange(cell.shape[0]) - start[position]
    group = np.empty(cell.shape[0], dtype=np.int64)
    group[order] = offset[position] + rank * k[position] // n[position]
    return group, int(offset[-1])


def enrol(
    age: np.ndarray,
    area_index: np.ndarray,
    area_lat: np.ndarray,
    area_lon: np.ndarray,
    schools: pd.DataFrame,
    kindergartens: pd.DataFrame,
    config,
    scale: float,
    rng: np.random.Generator,
) -> Enrolment:
    """School-age children to schools (classes by age year), pre-schoolers at the attendance rate to
    kindergartens (groups); capacities are max_students x scale, rounded up."""
    lo, hi = config.school_age
    k_lo, k_hi = config.kindergarten_age
    pupils = np.flatnonzero((age >= lo) & (age <= hi))
    young = np.flatnonzero((age >= k_lo) & (age <= k_hi))
    infants = young[rng.random(young.size) < config.kindergarten_attendance]
    results = {}
    for name, members, table in (("school", pupils, schools), ("kindergarten", infants, kindergartens)):
        capacity = np.ceil(table["max_students"].to_numpy() * scale)
        institution, overflow = _enrol(
            members, area_index, age, area_lat, area_lon, table, name, capacity, config.candidate_institutions, rng
        )
        results[name] = (members, institution, capacity, overflow)

    members, institution = results["school"][:2]
    class_of, n_classes = _split(institution * 256 + age[members], age[members], config.class_size, rng)
    k_members, k_institution = results["kindergarten"][:2]
    kgroup_of, _ = _split(k_institution, age[k_members], config.kindergarten_group_size, rng)
    group = np.full(age.shape[0], -1, dtype=np.int64)
    group[members] = class_of
    group[k_members] = n_classes + kgroup_of
    school_index = np.full(age.shape[0], -1, dtype=np.int64)
    school_index[members] = schools.index.to_numpy()[institution]
    kindergarten_index = np.full(age.shape[0], -1, dtype=np.int64)
    kindergarten_index[k_members] = kindergartens.index.to_numpy()[k_institution]

    frames = []
    for name, table in (("school", schools), ("kindergarten", kindergartens)):
        members, institution, capacity, overflow = results[name]
        enrolled = np.bincount(institution, minlength=len(table))
        pairs = pd.DataFrame({"institution": institution, "group": group[members]}).drop_duplicates()
        groups_per = np.bincount(pairs["institution"].to_numpy(), minlength=len(table))
        frames.append(
            pd.DataFrame(
                {
                    "kind": name,
                    "index": table.index.to_numpy(),
                    "area": table["area"].to_numpy(),
                    "sector": table["sector"].to_numpy(),
                    "age_min": table["age_min"].to_numpy(),
                    "age_max": table["age_max"].to_numpy(),
                    "max_students": table["max_students"].to_numpy(),
                    "capacity": capacity.astype(np.int64),
                    "enrolled": enrolled,
                    "overflow": overflow,
                    "groups": groups_per.astype(np.int64),
                }
            ).loc[lambda d: d["enrolled"] > 0]
        )
    fit = pd.concat(frames, ignore_index=True)
    fit["utilisation"] = fit["enrolled"] / fit["capacity"].where(fit["capacity"] > 0)
    notes = {
        "pupils": float(pupils.size),
        "kindergarten_children": float(infants.size),
        "pupils_over_capacity": float(results["school"][3].sum()),
        "kindergarten_children_over_capacity": float(results["kindergarten"][3].sum()),
        "school_classes": float(n_classes),
        "kindergarten_groups": float(group.max() + 1 - n_classes),
    }
    return Enrolment(group, school_index, kindergarten_index, fit, notes)
