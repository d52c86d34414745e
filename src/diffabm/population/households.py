"""Households: per SA2, (adults, children) compositions from the census table, filled with the SA2's agents
(children at random, the first two adults of a household with children by age, the other adults at random)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from diffabm.population.sampling import (
    choose_within,
    controlled_round,
    draw_in_segments,
    group_starts,
    random_order_within,
    rank_within,
)


@dataclass(frozen=True)
class ParentAges:
    """How the first two adults of a household with children are chosen by age (conf/population/census.yaml).

    The first adult's age minus the oldest child's age lies in `gap` (inclusive), drawn near `gap_mean`; a
    second adult (partner) lies within `partner_difference` years of the first and also in `gap`. Iterative
    household construction with parent-child and partner age differences follows Gargiulo et al. (2010), "An
    iterative approach for generating statistically realistic populations of households", PLoS ONE 5:e8828.
    """

    gap: tuple[int, int] = (16, 50)
    gap_mean: float = 30.0
    gap_sd: float = 6.0
    partner_difference: int = 15
    partner_sd: float = 5.0

    @classmethod
    def from_config(cls, config) -> ParentAges:
        """From the census population config (keys parent_age_gap*, partner_age_difference*)."""
        return cls(
            gap=(int(config.parent_age_gap[0]), int(config.parent_age_gap[1])),
            gap_mean=float(config.parent_age_gap_mean),
            gap_sd=float(config.parent_age_gap_sd),
            partner_difference=int(config.partner_age_difference),
            partner_sd=float(config.partner_age_difference_sd),
        )


# Households proposed for at once when drawing parents' ages (bounds the (households x ages) weight matrix).
_PROPOSAL_CHUNK = 1 << 16


@dataclass
class Households:
    """Household id per agent (contiguous from 0) and the fit tables."""

    household: np.ndarray
    fit: dict[str, pd.DataFrame]
    notes: dict[str, float]


def _pick(
    area: np.ndarray, candidates: np.ndarray, hh_area: np.ndarray, n_areas: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """For items in `area`, a random household among `candidates` of the same area; -1 where there is none."""
    candidates = candidates[np.argsort(hh_area[candidates], kind="stable")]
    starts = np.searchsorted(hh_area[candidates], np.arange(n_areas + 1))
    has = starts[area + 1] > starts[area]
    picked = np.full(area.shape[0], -1, dtype=np.int64)
    picked[has] = candidates[draw_in_segments(area[has], starts, rng)]
    return picked, has


def _propose_ages(
    area: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    centre: np.ndarray,
    sd: float,
    capacity: np.ndarray,
    n_ages: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Per household an (area x age) bucket with age in [low, high], drawn with probability proportional to the
    adults left in the bucket times a normal density around `centre`; -1 where no adult in range is left."""
    bucket = np.full(area.shape[0], -1, dtype=np.int64)
    offsets = np.arange(int((high - low).max(initial=-1)) + 1)
    for start in range(0, area.shape[0], _PROPOSAL_CHUNK):
        part = slice(start, start + _PROPOSAL_CHUNK)
        ages = low[part, None] + offsets
        buckets = area[part, None] * n_ages + np.minimum(ages, n_ages - 1)
        density = np.exp(-0.5 * ((ages - centre[part, None]) / sd) ** 2)
        cumulative = np.cumsum(np.where(ages <= high[part, None], capacity[buckets], 0) * density, axis=1)
        total = cumulative[:, -1]
        pick = np.minimum((cumulative < (rng.random(total.shape[0]) * total)[:, None]).sum(axis=1), offsets.size - 1)
        bucket[part] = np.where(total > 0, buckets[np.arange(total.shape[0]), pick], -1)
    return bucket


def _draw_ages(
    area: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    centre: np.ndarray,
    sd: float,
    capacity: np.ndarray,
    n_ages: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Per household the age of an adult of its area in [low, high] (-1 where none is left), taken from
    `capacity` (adults left per area x age, updated in place).

    In rounds, every household still without one proposes a bucket (`_propose_ages`); a bucket accepts as many
    proposals, in random order, as it has adults left; the others propose again with the capacities left.
    """
    low, high = np.maximum(low, 0), np.minimum(high, n_ages - 1)
    chosen = np.full(area.shape[0], -1, dtype=np.int64)
    pending = np.flatnonzero(high >= low)
    while pending.size:
        bucket = _propose_ages(area[pending], low[pending], high[pending], centre[pending], sd, capacity, n_ages, rng)
        pending, bucket = pending[bucket >= 0], bucket[bucket >= 0]
        accepted = rank_within(bucket, rng.random(bucket.shape[0]), capacity.shape[0]) < capacity[bucket]
        chosen[pending[accepted]] = bucket[accepted] % n_ages
        capacity -= np.bincount(bucket[accepted], minlength=capacity.shape[0])
        pending = pending[~accepted]
    return chosen


def _place_adults(
    adult_area: np.ndarray,
    adult_age: np.ndarray,
    hh_area: np.ndarray,
    hh_a: np.ndarray,
    oldest_child: np.ndarray,
    parents: ParentAges,
    rng: np.random.Generator,
) -> np.ndarray:
    """Household per adult: in households with children (oldest_child >= 0) a first adult aged gap years above
    the oldest child and a partner near the first (`ParentAges`), as far as the area's adults allow; every
    other adult slot (grandparents, adult children, flatmates, households without children) at random."""
    n_ages = int(adult_age.max(initial=0)) + 1
    n_buckets = (int(max(hh_area.max(initial=0), adult_area.max(initial=0))) + 1) * n_ages
    adult_bucket = adult_area * n_ages + adult_age
    capacity = np.bincount(adult_bucket, minlength=n_buckets)
    low, high = parents.gap

    with_children = np.flatnonzero((oldest_child >= 0) & (hh_a >= 1))
    child_age = oldest_child[with_children]
    head_age = _draw_ages(
        hh_area[with_children],
        child_age + low,
        child_age + high,
        child_age + parents.gap_mean,
        parents.gap_sd,
        capacity,
        n_ages,
        rng,
    )
    couple = (hh_a[with_children] >= 2) & (head_age >= 0)
    pairs, first, child_age = with_children[couple], head_age[couple], child_age[couple]
    partner_age = _draw_ages(
        hh_area[pairs],
        np.maximum(first - parents.partner_difference, child_age + low),
        np.minimum(first + parents.partner_difference, child_age + high),
        first.astype(float),
        parents.partner_sd,
        capacity,
        n_ages,
        rng,
    )

    # The chosen ages become adults: the k-th pick of an area x age bucket takes its k-th adult (random order).
    picked_hh = np.concatenate([with_children[head_age >= 0], pairs[partner_age >= 0]])
    picked_bucket = hh_area[picked_hh] * n_ages + np.concatenate(
        [head_age[head_age >= 0], partner_age[partner_age >= 0]]
    )
    order = random_order_within(adult_bucket, rng)
    starts = group_starts(adult_bucket[order], n_buckets)
    rank = rank_within(picked_bucket, rng.random(picked_bucket.shape[0]), n_buckets)
    household = np.full(adult_area.shape[0], -1, dtype=np.int64)
    household[order[starts[picked_bucket] + rank]] = picked_hh
    # The remaining adults of each area, in random order, into the area's remaining adult slots.
    rest = np.flatnonzero(household < 0)
    slot_hh = np.repeat(np.arange(hh_a.shape[0]), hh_a - np.bincount(picked_hh, minlength=hh_a.shape[0]))
    household[rest[random_order_within(adult_area[rest], rng)]] = slot_hh[random_order_within(hh_area[slot_hh], rng)]
    return household


def household_age_structure(
    household: np.ndarray, age: np.ndarray, adult_age: int, gap: tuple[int, int]
) -> pd.DataFrame:
    """Age structure of households with children: how many, and the shares whose adults are all 65+, whose
    youngest adult is less than 15 years older than the oldest child, and with no adult `gap` years (inclusive)
    older than the oldest child (no plausible parent)."""
    child = age < adult_age
    n = int(household.max(initial=-1)) + 1
    oldest_child = np.full(n, -1, dtype=np.int64)
    np.maximum.at(oldest_child, household[child], age[child])
    youngest_adult = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(youngest_adult, household[~child], age[~child])
    difference = age[~child] - oldest_child[household[~child]]
    parent = np.bincount(household[~child], weights=(difference >= gap[0]) & (difference <= gap[1]), minlength=n)
    with_children = oldest_child >= 0
    shares = {
        "all_adults_65_plus": youngest_adult[with_children] >= 65,
        "youngest_adult_less_than_15_years_older": youngest_adult[with_children] - oldest_child[with_children] < 15,
        f"no_adult_{gap[0]}_to_{gap[1]}_years_older": parent[with_children] == 0,
    }
    return pd.DataFrame(
        {
            "quantity": ["households_with_children", *shares],
            "households": [int(with_children.sum()), *(int(v.sum()) for v in shares.values())],
            "share": [1.0, *(float(v.mean()) if v.size else 0.0 for v in shares.values())],
        }
    )


def _compositions(
    table: pd.DataFrame, areas: np.ndarray, n_adults: np.ndarray, n_children: np.ndarray
) -> tuple[pd.DataFrame, np.ndarray]:
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
    rows = pd.DataFrame(
        {
            "area_index": np.concatenate([index[keep], np.repeat(fallback_areas, len(national))]),
            "adults": np.concatenate(
                [local["adults"].to_numpy()[keep], np.tile(national["adults"], len(fallback_areas))]
            ),
            "children": np.concatenate(
                [local["children"].to_numpy()[keep], np.tile(national["children"], len(fallback_areas))]
            ),
            "num": np.concatenate([local["num"].to_numpy()[keep], np.tile(national["num"], len(fallback_areas))]),
        }
    )
    return rows, fallback


def form_households(
    area_index: np.ndarray,
    age: np.ndarray,
    areas: np.ndarray,
    table: pd.DataFrame,
    adult_age: int,
    parents: ParentAges,
    rng: np.random.Generator,
) -> Households:
    """Households whose compositions follow each SA2's census table, scaled to the SA2's adults and children.

    Households with children are scaled so that their child slots match the children (at most one such
    household per adult), households without children so that the adult slots match the adults; after
    controlled rounding the few surplus or missing slots are removed or added at random, keeping at least one
    adult in every household with children. Compositions with no adult are not formed (reported). Children
    are placed at random within their SA2, adults by age (`_place_adults`).
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

    # Fill: the children of each area, in random order, into the area's child slots; then the adults by age.
    household = np.empty(area_index.shape[0], dtype=np.int64)
    children = np.flatnonzero(child)
    slot_hh = np.concatenate([np.repeat(hh_ids, hh_c), orphan_hh])
    slot_area = np.concatenate([hh_area[np.repeat(hh_ids, hh_c)], orphans])
    household[children[random_order_within(area_index[children], rng)]] = slot_hh[random_order_within(slot_area, rng)]
    oldest_child = np.full(n_hh, -1, dtype=np.int64)
    np.maximum.at(oldest_child, household[children], age[children])
    adults = np.flatnonzero(~child)
    household[adults] = _place_adults(area_index[adults], age[adults], hh_area, hh_a, oldest_child, parents, rng)
    used, household = np.unique(household, return_inverse=True)

    synthetic = pd.DataFrame(
        {
            "area_index": hh_area[used],
            "adults": np.bincount(household, weights=~child, minlength=used.size).astype(np.int64),
            "children": np.bincount(household, weights=child, minlength=used.size).astype(np.int64),
        }
    )
    fit = _fit(synthetic, table, areas, n_adults, n_children, f_children, f_adults, fallback)
    fit["household_age_structure"] = household_age_structure(household, age, adult_age, parents.gap)
    notes = {
        "households": float(used.size),
        "household_composition_tvd": float(0.5 * fit["households"]["share_error"].abs().sum()),
        "household_areas_national_fallback": float(fallback.sum()),
        "people_in_household_fallback_areas": float((n_adults + n_children)[fallback].sum()),
        "census_households_without_adult": float(fit["households"].query("adults == 0")["census_households"].sum()),
        "children_housed_outside_home_sa2": float(orphans.size),
        "census_household_slots_per_person": float(
            (table.loc[table["area"].isin(areas)].eval("(adults + children) * num").sum()) / max(area_index.shape[0], 1)
        ),
        **{
            f"households_with_children_{row.quantity}": float(row.share)
            for row in fit["household_age_structure"].iloc[1:].itertuples()
        },
    }
    return Households(household, fit, notes)


def _fit(
    synthetic: pd.DataFrame,
    table: pd.DataFrame,
    areas: np.ndarray,
    n_adults: np.ndarray,
    n_children: np.ndarray,
    f_children: np.ndarray,
    f_adults: np.ndarray,
    fallback: np.ndarray,
) -> dict[str, pd.DataFrame]:
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
    per_area = pd.DataFrame(
        {
            "area": areas,
            "adults": n_adults,
            "children": n_children,
            "census_households": census.groupby("area")["num"].sum().reindex(areas, fill_value=0).to_numpy(),
            "census_person_slots": census.eval("(adults + children) * num")
            .groupby(census["area"])
            .sum()
            .reindex(areas, fill_value=0)
            .to_numpy(),
            "synthetic_households": synthetic.groupby("area_index")
            .size()
            .reindex(range(len(areas)), fill_value=0)
            .to_numpy(),
            "factor_households_with_children": f_children,
            "factor_households_without_children": f_adults,
            "national_fallback": fallback,
            "composition_tvd": tvd.reindex(areas, fill_value=0.0).to_numpy(),
        }
    )
    return {"households": comp, "household_size": size, "households_sa2": per_area}
