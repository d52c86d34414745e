"""Households: per SA2, (adults, children) compositions from the census table, filled with the SA2's agents."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from diffabm.population.sampling import choose_within, controlled_round, draw_in_segments


@dataclass
class Households:
    """Household id per agent (contiguous from 0) and the fit tables."""

    household: np.ndarray
    fit: dict[str, pd.DataFrame]
    notes: dict[str, float]


def _random_sorted(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Order that sorts by group, random within groups."""
    return np.lexsort((rng.random(groups.shape[0]), groups))


def _pick(area: np.ndarray, candidates: np.ndarray, hh_area: np.ndarray, n_areas: int,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """For items in `area`, a random household among `candidates` of the same area; -1 where there is none."""
    candidates = candidates[np.argsort(hh_area[candidates], kind="stable")]
    starts = np.searchsorted(hh_area[candidates], np.arange(n_areas + 1))
    has = starts[area + 1] > starts[area]
    picked = np.full(area.shape[0], -1, dtype=np.int64)
    picked[has] = candidates[draw_in_segments(area[has], starts, rng)]
    return picked, has


def _compositions(table: pd.DataFrame, areas: np.ndarray, n_adults: np.ndarray,
                  n_children: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    """Census compositions (a >= 1) per selected area; areas lacking households with and without children
    use the national distribution. Returns rows (area_index, adults, children, num) and the fallback mask."""
    table = table.loc[(table["adults"] >= 1) & (table["num"] > 0)]
    national = table.groupby(["adults", "children"], as_index=False)["num"].sum()
    local = table.loc[table["area"].isin(areas)]
    index = np.searchsorted(areas, local["area"].to_numpy())
    with_children = np.bincount(index, weights=local["children"].to_numpy() > 0, minlength=len(areas))
    without = np.bincount(index, weights=local["children"].to_numpy() == 0, minlength=len(areas))
    fallback = ((with_children == 0) & (n_children > 0)) | ((without == 0) & (n_adults > 0))
    keep = ~fallback[index]
    fallback_areas = np.flatnonzero(fallback)
    rows = pd.DataFrame({
        "area_index": np.concatenate([index[keep], np.repeat(fallback_areas, len(national))]),
        "adults": np.concatenate([local["adults"].to_numpy()[keep], np.tile(national["adults"], len(fallback_areas))]),
        "children": np.concatenate([local["children"].to_numpy()[keep],
                                    np.tile(national["children"], len(fallback_areas))]),
        "num": np.concatenate([local["num"].to_numpy()[keep], np.tile(national["num"], len(fallback_areas))]),
    })
    return rows, fallback


def form_households(area_index: np.ndarray, age: np.ndarray, areas: np.ndarray, table: pd.DataFrame,
                    adult_age: int, rng: np.random.Generator) -> Households:
    """Households whose compositions follow each SA2's census table, scaled to the SA2's adults and children.

    Households with children are scaled so that their child slots match the children (at most one such
    household per adult), households without children so that the adult slots match the adults; after
    controlled rounding the few surplus or missing slots are removed or added at random, keeping at least one
    adult in every household with children. Compositions with no adult are not formed (reported).
    """
    n_areas = len(areas)
    child = age < adult_age
    n_adults = np.bincount(area_index[~child], minlength=n_areas)
    n_children = np.bincount(area_index[child], minlength=n_areas)
    rows, fallback = _compositions(table, areas, n_adults, n_children)
    g, a, c, num = (rows[k].to_numpy() for k in ("area_index", "adults", "children", "num"))
    has_c = c > 0
    child_slots = np.bincount(g, weights=num * c, minlength=n_areas)
    child_households = np.bincount(g, weights=num * has_c, minlength=n_areas)
    adults_in_child_households = np.bincount(g, weights=num * a * has_c, minlength=n_areas)
    adult_only_slots = np.bincount(g, weights=num * a * ~has_c, minlength=n_areas)
    with np.errstate(divide="ignore", invalid="ignore"):
        f_children = np.nan_to_num(np.minimum(n_children / child_slots, n_adults / child_households))
        f_adults = np.nan_to_num(np.maximum(n_adults - f_children * adults_in_child_households, 0) / adult_only_slots)
    expected = num * np.where(has_c, f_children[g], f_adults[g])
    counts = controlled_round(expected, g, n_areas, rng)

    # One household per expanded row; areas with adults but no household get a single-adult one.
    empty = np.flatnonzero((np.bincount(g, weights=counts, minlength=n_areas) == 0) & (n_adults > 0))
    hh_area = np.concatenate([np.repeat(g, counts), empty])
    hh_a = np.concatenate([np.repeat(a, counts), np.ones(len(empty), np.int64)])
    hh_c = np.concatenate([np.repeat(c, counts), np.zeros(len(empty), np.int64)])
    n_hh = hh_area.shape[0]
    hh_ids = np.arange(n_hh)

    # Surplus child slots: remove at random.
    surplus = np.maximum(np.bincount(hh_area, weights=hh_c, minlength=n_areas) - n_children, 0).astype(np.int64)
    slot_hh = np.repeat(hh_ids, hh_c)
    removed = choose_within(hh_area[slot_hh], surplus, n_areas, rng)
    hh_c = hh_c - np.bincount(slot_hh[removed], minlength=n_hh)
    # More households with children than adults: dissolve some (their children are re-placed below).
    excess = np.maximum(np.bincount(hh_area, weights=hh_c > 0, minlength=n_areas) - n_adults, 0).astype(np.int64)
    with_c = np.flatnonzero(hh_c > 0)
    dissolve = with_c[choose_within(hh_area[with_c], excess, n_areas, rng)]
    hh_c[dissolve] = 0
    hh_a[dissolve] = 0
    # Missing child slots: into households with children of the area, else any household with an adult.
    missing = n_children - np.bincount(hh_area, weights=hh_c, minlength=n_areas).astype(np.int64)
    items = np.repeat(np.arange(n_areas), missing)
    picked, has = _pick(items, np.flatnonzero(hh_c > 0), hh_area, n_areas, rng)
    picked[~has], _ = _pick(items[~has], np.flatnonzero(hh_a > 0), hh_area, n_areas, rng)
    orphans = items[picked < 0]
    hh_c += np.bincount(picked[picked >= 0], minlength=n_hh)
    # Adult slots: remove surplus (keeping one adult where there are children), add the missing at random.
    adult_slots = np.bincount(hh_area, weights=hh_a, minlength=n_areas).astype(np.int64)
    slot_hh = np.repeat(hh_ids, hh_a - (hh_c > 0))
    removed = choose_within(hh_area[slot_hh], np.maximum(adult_slots - n_adults, 0), n_areas, rng)
    hh_a = hh_a - np.bincount(slot_hh[removed], minlength=n_hh)
    items = np.repeat(np.arange(n_areas), np.maximum(n_adults - adult_slots, 0))
    picked, _ = _pick(items, np.flatnonzero(hh_a > 0), hh_area, n_areas, rng)
    hh_a += np.bincount(picked, minlength=n_hh)
    # Children of SA2s without any adult join a random household with an adult anywhere in the selection.
    with_adult = np.flatnonzero(hh_a > 0)
    if orphans.size and not with_adult.size:
        raise ValueError("the selected population has children but no adults: cannot form households")
    orphan_hh = with_adult[rng.integers(0, max(with_adult.size, 1), orphans.size)]

    # Fill: adults and children of each area, in random order, into the area's slots.
    household = np.empty(area_index.shape[0], dtype=np.int64)
    for is_child, slots in ((False, hh_a), (True, hh_c)):
        members = np.flatnonzero(child == is_child)
        slot_hh = np.repeat(hh_ids, slots)
        slot_area = hh_area[slot_hh]
        if is_child:
            slot_hh = np.concatenate([slot_hh, orphan_hh])
            slot_area = np.concatenate([slot_area, orphans])
        household[members[_random_sorted(area_index[members], rng)]] = slot_hh[_random_sorted(slot_area, rng)]
    used, household = np.unique(household, return_inverse=True)

    synthetic = pd.DataFrame({
        "area_index": hh_area[used],
        "adults": np.bincount(household, weights=~child, minlength=used.size).astype(np.int64),
        "children": np.bincount(household, weights=child, minlength=used.size).astype(np.int64),
    })
    fit = _fit(synthetic, table, areas, n_adults, n_children, f_children, f_adults, fallback)
    notes = {
        "households": float(used.size),
        "household_composition_tvd": float(0.5 * fit["households"]["share_error"].abs().sum()),
        "household_areas_national_fallback": float(fallback.sum()),
        "people_in_household_fallback_areas": float((n_adults + n_children)[fallback].sum()),
        "census_households_without_adult": float(fit["households"].query("adults == 0")["census_households"].sum()),
        "children_housed_outside_home_sa2": float(orphans.size),
        "census_household_slots_per_person": float(
            (table.loc[table["area"].isin(areas)].eval("(adults + children) * num").sum())
            / max(area_index.shape[0], 1)),
    }
    return Households(household, fit, notes)


def _fit(synthetic: pd.DataFrame, table: pd.DataFrame, areas: np.ndarray, n_adults: np.ndarray,
         n_children: np.ndarray, f_children: np.ndarray, f_adults: np.ndarray,
         fallback: np.ndarray) -> dict[str, pd.DataFrame]:
    """Household composition and size: synthetic vs census counts and shares, overall and per SA2."""
    census = table.loc[table["area"].isin(areas)]
    keys = ["adults", "children"]
    syn = synthetic.groupby(keys).size().rename("synthetic_households")
    cen = census.groupby(keys)["num"].sum().rename("census_households")
    comp = pd.concat([cen, syn], axis=1).fillna(0).astype(np.int64).reset_index()
    comp["census_share"] = comp["census_households"] / max(comp["census_households"].sum(), 1)
    comp["synthetic_share"] = comp["synthetic_households"] / max(comp["synthetic_households"].sum(), 1)
    comp["share_error"] = comp["synthetic_share"] - comp["census_share"]

    comp["size"] = comp["adults"] + comp["children"]
    size = comp.groupby("size")[["census_households", "synthetic_households", "census_share", "synthetic_share"]].sum()
    size = size.reset_index()

    syn_area = synthetic.assign(area=areas[synthetic["area_index"]]).groupby(["area", *keys]).size()
    cen_area = census.set_index(["area", *keys])["num"]
    both = pd.concat([cen_area.rename("census"), syn_area.rename("synthetic")], axis=1).fillna(0)
    shares = both / both.groupby(level="area").transform("sum").where(lambda d: d > 0, 1)
    tvd = (0.5 * (shares["synthetic"] - shares["census"]).abs()).groupby(level="area").sum()
    per_area = pd.DataFrame({
        "area": areas, "adults": n_adults, "children": n_children,
        "census_households": census.groupby("area")["num"].sum().reindex(areas, fill_value=0).to_numpy(),
        "census_person_slots": census.eval("(adults + children) * num").groupby(census["area"]).sum()
        .reindex(areas, fill_value=0).to_numpy(),
        "synthetic_households": synthetic.groupby("area_index").size().reindex(range(len(areas)), fill_value=0)
        .to_numpy(),
        "factor_households_with_children": f_children, "factor_households_without_children": f_adults,
        "national_fallback": fallback, "composition_tvd": tvd.reindex(areas, fill_value=0.0).to_numpy(),
    })
    return {"households": comp, "household_size": size, "households_sa2": per_area}
