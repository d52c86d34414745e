"""The Ministry of Health's health-service-user (HSU) population per SA2 x age group, and how the census table
compares with it.

`vaccine_uptake_by_sa2.csv` (Ministry of Health, github.com/minhealthnz/nz-covid-data, CC BY-SA 4.0) gives, per
SA2 (2018 code) and DHB of residence, the HSU population of the age groups `5-11` and `12+`: people enrolled with
a primary health organisation or who used a health service in the year, the denominator of the Ministry's
vaccination and case rates, and how many of them had at least one dose of a COVID-19 vaccine and completed the
primary course. Numbers carry thousands separators; the Ministry writes `Masked` for withheld cells, and its
smallest published population is 40 (smaller SA2 x age groups appear to be left out: 128 SA2s have no 5-11 row).
The same file gives each SA2's District Health Board (`districts`) and the vaccine uptake per SA2 x age group
(`vaccine_uptake`).

Run `python -m diffabm.population.health_service` to print the census table against the HSU population per
regional council and per SA2 size (README.md, "Population": where the census table's shortfall comes from).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from diffabm.population.tables import CensusTableError, _nearest, read_census

COLUMNS = {
    "area": "SA2 Code 2018",
    "dhb": "DHB of residence",
    "age_group": "Age",
    "population": "Population",
    "dose1": "At least partially vaccinated",
    "dose2": "Completed primary course",
}
COUNTS = ("population", "dose1", "dose2")
UNKNOWN_AREA = -1  # the Ministry's `Unknown` SA2 (people whose address could not be placed)
MASKED = "Masked"
_NUMBER = re.compile(r"\d{1,3}(,\d{3})+|\d+")
_AGE_GROUP = re.compile(r"^(?P<low>\d+)(?:-(?P<high>\d+)|(?P<open>\+))$")  # 5-11, or 12+ (open-ended)
_CODE_EXPONENT = re.compile(r"\d+(\.\d+)?e\+\d+")  # an SA2 code a spreadsheet wrote as 2e+05
OLDEST_AGE = 120


def _fail(path: Path, df: pd.DataFrame, column: str, mask: np.ndarray, problem: str) -> None:
    """Raise CensusTableError naming the file, the column, the offending value and its data row (0-based)."""
    position = int(np.flatnonzero(mask)[0])
    value = df[COLUMNS[column]].iloc[position]
    raise CensusTableError(
        path,
        COLUMNS[column],
        f"{problem}: {value!r}",
        int(df.index[position]),
        df.iloc[[position]].to_dict("records")[0],
    )


def _area_codes(path: Path, df: pd.DataFrame) -> np.ndarray:
    """SA2 codes: digits, a whole number in exponent notation (`2e+05`, Pomare), or `Unknown` (-1)."""
    text = df[COLUMNS["area"]]
    exponent = text.str.fullmatch(_CODE_EXPONENT).to_numpy()
    codes = pd.to_numeric(text.where(text.str.fullmatch(r"\d+") | exponent), errors="coerce").to_numpy()
    codes = np.where(text.to_numpy() == "Unknown", UNKNOWN_AREA, codes)
    bad = np.isnan(codes) | (codes != np.floor(codes))
    if bad.any():
        _fail(path, df, "area", bad, "is not an SA2 code (digits, or Unknown)")
    return codes.astype(np.int64)


def _age_bounds(path: Path, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    parts = df[COLUMNS["age_group"]].str.extract(_AGE_GROUP)
    low = parts["low"].astype(float).to_numpy()
    high = parts["high"].astype(float).where(parts["open"].isna(), OLDEST_AGE).to_numpy()
    bad = np.isnan(low) | np.isnan(high) | (low > high)
    if bad.any():
        _fail(path, df, "age_group", bad, "is not an age group like 5-11 or 12+")
    groups = pd.DataFrame({"low": low, "high": high}).drop_duplicates().sort_values("low")
    if (groups["low"].to_numpy()[1:] <= groups["high"].to_numpy()[:-1]).any():
        raise CensusTableError(
            path, COLUMNS["age_group"], f"has overlapping age groups {sorted(set(df[COLUMNS['age_group']]))}"
        )
    return low.astype(np.int64), high.astype(np.int64)


def _counts(path: Path, df: pd.DataFrame, column: str) -> np.ndarray:
    """A count column as numbers (NaN where `Masked`)."""
    text = df[COLUMNS[column]]
    masked = (text == MASKED).to_numpy()
    bad = ~(text.str.fullmatch(_NUMBER).to_numpy() | masked)
    if bad.any():
        _fail(path, df, column, bad, f"has a malformed number (expected digits with thousands separators, or {MASKED})")
    return pd.to_numeric(text.str.replace(",", "").where(~masked)).to_numpy(np.float64)


def read_health_service_population(path: str | Path) -> pd.DataFrame:
    """Validated HSU populations and vaccinations: one row per SA2 x age group, summed over the DHBs an SA2
    straddles.

    Columns: area (SA2 2018 code, -1 for the Ministry's `Unknown`), dhb (of the larger part), age_group (label),
    age_min, age_max (inclusive; an open group `12+` ends at 120), population, dose1 (people with at least one
    dose), dose2 (people who completed the primary course); a count is NaN where `Masked` (in any DHB part). A
    malformed cell raises CensusTableError (a ValueError) naming the file, the column, the value and its row.
    """
    path = Path(path)
    if not path.exists():
        raise CensusTableError(path, "*", "cannot be read: file does not exist")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [column for column in COLUMNS.values() if column not in df.columns]
    if missing:
        raise CensusTableError(path, missing[0], f"is missing (columns present: {list(df.columns)})")
    df = df.assign(**{column: df[column].str.strip() for column in COLUMNS.values()})
    low, high = _age_bounds(path, df)
    table = pd.DataFrame(
        {
            "area": _area_codes(path, df),
            "dhb": df[COLUMNS["dhb"]].to_numpy(),
            "age_group": df[COLUMNS["age_group"]].to_numpy(),
            "age_min": low,
            "age_max": high,
            **{column: _counts(path, df, column) for column in COUNTS},
        }
    )
    duplicated = table.duplicated(["area", "dhb", "age_group"]).to_numpy()
    if duplicated.any():
        _fail(path, df, "area", duplicated, "has a duplicate SA2 x DHB x age group")
    dhb = table.sort_values("population", ascending=False, kind="stable").drop_duplicates("area")
    keys = ["area", "age_group", "age_min", "age_max"]
    merged = table.groupby(keys, as_index=False, sort=True)[list(COUNTS)].sum(skipna=False)
    return merged.assign(dhb=dhb.set_index("area")["dhb"].reindex(merged["area"]).to_numpy())


@dataclass
class AgeGroups:
    """The HSU age groups (sorted) and, below the youngest, the ages the Ministry's table leaves out."""

    labels: list[str]
    low: np.ndarray
    high: np.ndarray

    @classmethod
    def of(cls, hsu: pd.DataFrame) -> AgeGroups:
        groups = hsu[["age_group", "age_min", "age_max"]].drop_duplicates().sort_values("age_min")
        return cls(list(groups["age_group"]), groups["age_min"].to_numpy(), groups["age_max"].to_numpy())

    @property
    def uncovered_label(self) -> str:
        """Label of the ages below the youngest group, e.g. `0-4`."""
        return f"0-{int(self.low[0]) - 1}"

    def index(self, age: np.ndarray) -> np.ndarray:
        """Group index per age (position in `labels`); -1 below the youngest group."""
        position = np.searchsorted(self.low, age, side="right") - 1
        inside = (position >= 0) & (age <= self.high[np.maximum(position, 0)])
        return np.where(inside, position, -1)


@dataclass
class Reweighting:
    """Per census cell: the factor that scales it to the HSU population, and its SA2 x age group (a compact
    index whose total controlled rounding makes exact); per SA2 x age group: census, HSU and factor."""

    factor: np.ndarray
    group: np.ndarray
    groups: pd.DataFrame  # area, age_group, census, hsu (NaN: no Ministry figure), factor
    notes: dict[str, float]

    @property
    def n_groups(self) -> int:
        return len(self.groups)

    def fit(self, cells: pd.DataFrame) -> pd.DataFrame:
        """The SA2 x age group table with the target (HSU x scale, or census x factor x scale) and the
        synthetic count; `cells` are the census cells with their `target` and `synthetic` columns."""
        sums = cells.groupby(self.group)[["target", "synthetic"]].sum()
        table = self.groups.assign(
            target=sums["target"].reindex(range(self.n_groups), fill_value=0.0).to_numpy(),
            synthetic=sums["synthetic"].reindex(range(self.n_groups), fill_value=0).to_numpy(),
        )
        table["error"] = table["synthetic"] - np.floor(table["target"] + 0.5 + 1e-9)
        return table


def reweight_to_health_service(cells: pd.DataFrame, hsu: pd.DataFrame) -> Reweighting:
    """Factors that scale the census cells (area, age, census) of each SA2 x HSU age group to its HSU population.

    Within an SA2 x age group the HSU people are spread over single-year ages, sexes and ethnicities in
    proportion to the census cells. Under-fives (no HSU group) take the factor of their SA2's youngest group
    (5-11), the nearest ages the Ministry counts; where that factor is undefined they keep the census count. An
    SA2 x age group without an HSU figure (no row, or `Masked`) keeps the census count; HSU
    people of an age group in which the SA2 has no census people cannot be placed and are reported (notes).
    """
    groups = AgeGroups.of(hsu)
    group = groups.index(cells["age"].to_numpy())
    grouped = pd.DataFrame({"area": cells["area"].to_numpy(), "group": group}).groupby(["area", "group"])
    codes = grouped.ngroup().to_numpy()
    table = grouped.size().index.to_frame(index=False)
    table["census"] = np.bincount(codes, weights=cells["census"].to_numpy(np.float64), minlength=len(table))
    known = hsu.loc[hsu["area"] != UNKNOWN_AREA]
    ministry = known.set_index(["area", groups.index(known["age_min"].to_numpy())])["population"]
    table["hsu"] = ministry.reindex(pd.MultiIndex.from_frame(table[["area", "group"]])).to_numpy()
    table["factor"] = np.where(np.isnan(table["hsu"]), 1.0, table["hsu"] / table["census"])
    youngest = table.loc[table["group"] == 0].set_index("area")["factor"]
    under_five = table["group"] < 0
    table.loc[under_five, "factor"] = youngest.reindex(table.loc[under_five, "area"]).fillna(1.0).to_numpy()
    table["age_group"] = np.where(
        under_five, groups.uncovered_label, np.asarray(groups.labels, dtype=object)[np.maximum(table["group"], 0)]
    )

    in_selection = known.loc[known["area"].isin(table["area"])]
    placed = table["hsu"].fillna(0).sum()
    notes = {
        "hsu_people_in_selected_sa2s": float(in_selection["population"].sum()),
        "hsu_people_placed": float(placed),
        "hsu_people_without_census_people_in_age_group": float(in_selection["population"].sum() - placed),
        "census_people_kept_without_hsu_figure": float(table.loc[~under_five & table["hsu"].isna(), "census"].sum()),
        "census_people_under_five": float(table.loc[under_five, "census"].sum()),
        "reweighted_people_under_five": float((table["census"] * table["factor"])[under_five].sum()),
    }
    columns = ["area", "age_group", "census", "hsu", "factor"]
    return Reweighting(table["factor"].to_numpy()[codes], codes.astype(np.int64), table[columns], notes)


def district_labels(hsu: pd.DataFrame) -> list[str]:
    """The District Health Boards of the Ministry's SA2s, sorted (spelt as in its files, e.g. `Counties Manukau`)."""
    return sorted(set(hsu.loc[hsu["area"] != UNKNOWN_AREA, "dhb"]))


def districts(hsu: pd.DataFrame, location: pd.DataFrame, areas: np.ndarray) -> tuple[np.ndarray, int]:
    """The DHB of residence of each SA2 in `areas` (names, in order) and how many SA2s took a neighbour's.

    An SA2 has the Ministry's DHB (of its larger part where it straddles two); one the Ministry's file lacks takes
    the DHB of the nearest SA2 (centroid, `location`: area, latitude, longitude) that the file has.
    """
    own = hsu.loc[hsu["area"] != UNKNOWN_AREA].drop_duplicates("area").set_index("area")["dhb"]
    names = own.reindex(areas).to_numpy(dtype=object)
    lacking = pd.isna(names)
    centroid = location.set_index("area")
    near, far = centroid.reindex(areas[lacking]), centroid.reindex(own.index.intersection(centroid.index))
    nearest = _nearest(
        near["latitude"].to_numpy(),
        near["longitude"].to_numpy(),
        far["latitude"].to_numpy(),
        far["longitude"].to_numpy(),
    )
    names[lacking] = own.loc[far.index[nearest]].to_numpy()
    return names, int(lacking.sum())


@dataclass
class VaccineUptake:
    """COVID-19 vaccine uptake per selected SA2 x HSU age group: `table` (area-major, the `groups` in order per
    SA2) with area, district, age_group, population (HSU; NaN: no Ministry row), dose1 and dose2 (shares of the
    group with at least one dose and with the primary course completed)."""

    groups: AgeGroups
    table: pd.DataFrame
    notes: dict[str, float]

    def of_agents(self, area_index: np.ndarray, age: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Dose-1 and dose-2 uptake (float32) of agents of SA2 `areas[area_index]` and `age`; 0 below the youngest
        group (the Ministry's table has no under-fives)."""
        group = self.groups.index(age)
        row = area_index * len(self.groups.labels) + np.maximum(group, 0)
        return tuple(
            np.where(group >= 0, self.table[dose].to_numpy()[row], 0.0).astype(np.float32)
            for dose in ("dose1", "dose2")
        )

    def fit(self, area_index: np.ndarray, age: np.ndarray, dose1: np.ndarray, dose2: np.ndarray) -> pd.DataFrame:
        """Per district x age group: the agents and their mean uptake, against the HSU population of the selected
        SA2s and its population-weighted uptake (masked or missing cells at their fallback; no Ministry figures
        below the youngest group)."""
        n = len(self.groups.labels)
        names, code = np.unique(self.table["district"].to_numpy()[::n].astype(str), return_inverse=True)
        key = code[area_index] * (n + 1) + self.groups.index(age) + 1  # per district: below the youngest, the groups
        size = len(names) * (n + 1)
        agents = np.bincount(key, minlength=size)
        table = pd.DataFrame(
            {
                "district": np.repeat(names, n + 1),
                "age_group": np.tile([self.groups.uncovered_label, *self.groups.labels], len(names)),
                "agents": agents,
            }
        )
        for dose, values in (("dose1", dose1), ("dose2", dose2)):
            table[f"{dose}_uptake"] = np.bincount(key, weights=values, minlength=size) / np.maximum(agents, 1)
        known = self.table.dropna(subset=["population"])
        people = known[["dose1", "dose2"]].mul(known["population"], axis=0)
        ministry = (
            pd.concat([known[["district", "age_group", "population"]], people], axis=1)
            .groupby(["district", "age_group"])
            .sum()
        )
        ministry = pd.DataFrame(
            {
                "hsu_population": ministry["population"],
                "ministry_dose1_uptake": ministry["dose1"] / ministry["population"],
                "ministry_dose2_uptake": ministry["dose2"] / ministry["population"],
            }
        )
        return table.join(ministry, on=["district", "age_group"]).loc[agents > 0].reset_index(drop=True)


def vaccine_uptake(hsu: pd.DataFrame, areas: np.ndarray, district: np.ndarray) -> VaccineUptake:
    """Dose-1 and dose-2 uptake per SA2 (`areas`, of DHB `district`) x HSU age group: the Ministry's
    vaccinated people over its population.

    A `Masked` count takes the uptake of its DHB x age group over the rows where that count is published, as
    does an SA2 x age group without a row (DHB: `district`); an SA2 x age group's first-dose uptake that fell back
    is raised to its published second-dose uptake where that is higher, and the second-dose uptake never exceeds
    the first; all in [0, 1].
    """
    groups = AgeGroups.of(hsu)
    known = hsu.loc[hsu["area"] != UNKNOWN_AREA]
    table = pd.MultiIndex.from_product([areas, groups.labels], names=["area", "age_group"]).to_frame(index=False)
    table.insert(1, "district", np.repeat(np.asarray(district, dtype=object), len(groups.labels)))
    ministry = known.set_index(["area", "age_group"]).reindex(pd.MultiIndex.from_frame(table[["area", "age_group"]]))
    table["population"] = ministry["population"].to_numpy()
    published = {}
    for dose in ("dose1", "dose2"):
        rows = known.dropna(subset=["population", dose]).groupby(["dhb", "age_group"])[["population", dose]].sum()
        rate = (rows[dose] / rows["population"]).reindex(pd.MultiIndex.from_frame(table[["district", "age_group"]]))
        own = ministry[dose].to_numpy() / table["population"].to_numpy()
        published[dose] = ~np.isnan(own)
        table[dose] = np.where(published[dose], own, rate.to_numpy())
    table["dose1"] = np.where(published["dose1"], table["dose1"], np.maximum(table["dose1"], table["dose2"]))
    table["dose2"] = np.minimum(table["dose2"], table["dose1"])
    table[["dose1", "dose2"]] = table[["dose1", "dose2"]].clip(0, 1)
    if table[["dose1", "dose2"]].isna().any().any():
        row = table.loc[table[["dose1", "dose2"]].isna().any(axis=1)].iloc[0]
        raise ValueError(
            f"SA2 {row['area']}, age group {row['age_group']}: no vaccine uptake for it or for "
            f"its DHB {row['district']!r}"
        )
    without_row = np.isnan(table["population"].to_numpy())
    notes = {
        "vaccine_uptake_sa2_age_groups_without_ministry_row": float(without_row.sum()),
        "vaccine_uptake_sa2_age_groups_dose1_masked": float((~without_row & ~published["dose1"]).sum()),
        "vaccine_uptake_sa2_age_groups_dose2_masked": float((~without_row & ~published["dose2"]).sum()),
    }
    return VaccineUptake(groups, table, notes)


def census_by_group(population_structure: pd.DataFrame, groups: AgeGroups) -> pd.DataFrame:
    """Census table people per SA2 and HSU age group (columns: area, group index, census)."""
    group = groups.index(population_structure["age"].to_numpy())
    return (
        population_structure.assign(group=group)
        .groupby(["area", "group"], as_index=False)["value"]
        .sum()
        .rename(columns={"value": "census"})
    )


def compare_by_region(population_structure: pd.DataFrame, hierarchy: pd.DataFrame, hsu: pd.DataFrame) -> pd.DataFrame:
    """Census table vs HSU population per regional council, matched on the SA2 2018 code.

    Columns: census people below the youngest HSU group, then per HSU group the census and HSU people, then
    both over all HSU groups and their ratio. Extra rows: HSU people in SA2s that have no census people, HSU
    people of the Ministry's `Unknown` SA2, and the New Zealand total.
    """
    groups = AgeGroups.of(hsu)
    census = census_by_group(population_structure, groups)
    census = census.pivot_table(index="area", columns="group", values="census", aggfunc="sum", fill_value=0)
    known = hsu.loc[hsu["area"] != UNKNOWN_AREA]
    ministry = known.pivot_table(index="area", columns="age_group", values="population", aggfunc="sum")
    ministry = ministry.reindex(columns=groups.labels).fillna(0)
    rows = pd.DataFrame(index=census.index.union(ministry.index))
    in_census = rows.index.isin(census.index)
    region = hierarchy.set_index("area")["region"].reindex(rows.index).fillna("(no region)").to_numpy()
    rows["region"] = np.where(in_census, region, "(SA2 without census people)")
    rows["sa2"] = 1
    rows[f"census_{groups.uncovered_label}"] = census.reindex(rows.index).get(-1, 0)
    for i, label in enumerate(groups.labels):
        rows[f"census_{label}"] = census.reindex(rows.index).get(i, 0)
        rows[f"hsu_{label}"] = ministry[label].reindex(rows.index)
    rows = rows.fillna(0)
    table = rows.groupby("region", sort=True).sum(numeric_only=True)
    unknown = hsu.loc[hsu["area"] == UNKNOWN_AREA].set_index("age_group")["population"]
    table.loc["(SA2 Unknown to the Ministry)"] = 0
    for label in groups.labels:
        table.loc["(SA2 Unknown to the Ministry)", f"hsu_{label}"] = unknown.get(label, 0)
    table.loc["New Zealand"] = table.sum()
    covered = f"{groups.low[0]}+"
    table[f"census_{covered}"] = table[[f"census_{label}" for label in groups.labels]].sum(axis=1)
    table[f"hsu_{covered}"] = table[[f"hsu_{label}" for label in groups.labels]].sum(axis=1)
    table = table.astype(np.int64)
    table["census_per_hsu"] = (table[f"census_{covered}"] / table[f"hsu_{covered}"].where(lambda s: s > 0)).round(3)
    return table.reset_index()


def compare_by_sa2_size(
    population_structure: pd.DataFrame,
    hsu: pd.DataFrame,
    edges: tuple[float, ...] = (0, 500, 1000, 2000, 3000, 5000, np.inf),
) -> pd.DataFrame:
    """Census table vs HSU people of the HSU ages in SA2s binned by their HSU population (SA2s in both)."""
    groups = AgeGroups.of(hsu)
    census = census_by_group(population_structure, groups).query("group >= 0").groupby("area")["census"].sum()
    ministry = hsu.loc[hsu["area"] != UNKNOWN_AREA].groupby("area")["population"].sum()
    both = pd.concat([census, ministry.rename("hsu")], axis=1, join="inner")
    both["hsu_people_in_sa2"] = pd.cut(both["hsu"], edges)
    table = both.groupby("hsu_people_in_sa2", observed=True).agg(
        sa2=("hsu", "size"), census=("census", "sum"), hsu=("hsu", "sum")
    )
    table = table.astype(np.int64)
    table["census_per_hsu"] = (table["census"] / table["hsu"]).round(3)
    return table.reset_index().astype({"hsu_people_in_sa2": str})


def main(argv: list[str] | None = None) -> None:
    """Print the census table against the HSU population per region and per SA2 size."""
    root = Path(__file__).resolve().parents[3]
    config = OmegaConf.load(root / "conf" / "population" / "census.yaml")
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--data-dir", default=str(root / config.data_dir))
    parser.add_argument("--health-service", default=str(root / config.health_service_file))
    args = parser.parse_args(argv)
    tables = read_census(args.data_dir, config.exclude_areas or ())
    hsu = read_health_service_population(args.health_service)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(
            compare_by_region(tables["population_structure"], tables["geography_hierarchy"], hsu).to_string(index=False)
        )
        print()
        print(compare_by_sa2_size(tables["population_structure"], hsu).to_string(index=False))


if __name__ == "__main__":
    main()
