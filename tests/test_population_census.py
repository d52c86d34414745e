"""Census-based population synthesis: counts, households, schools, work, determinism, malformed tables."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from diffabm.population.census import synthesize_census
from diffabm.population.households import ParentAges, form_households
from diffabm.population.report import write_fit_report
from diffabm.population.schema import ETHNICITY_LABELS, Population
from diffabm.population.tables import CensusTableError
from diffabm.store import read_dataset, write_dataset

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "nz" / "census"
HSU = ROOT / "data" / "nz" / "epi" / "vaccine_uptake_by_sa2.csv"
AUCKLAND_DHBS = {"Auckland", "Waitemata", "Counties Manukau"}


def make_config(**overrides):
    config = OmegaConf.load(ROOT / "conf" / "population" / "census.yaml")
    config.data_dir = str(DATA)
    return OmegaConf.merge(config, overrides)


@pytest.fixture(scope="module")
def nelson():
    return synthesize_census(make_config(), seed=3)


@pytest.fixture(scope="module")
def census_people() -> pd.DataFrame:
    """population_structure with SA2 2023 split codes mapped to their SA2 2018 parent (independent of the code)."""
    people = pd.read_parquet(DATA / "population_structure.parquet")
    register = pd.read_parquet(DATA / "geography_location.parquet")["area"].to_numpy()
    area = people["area"].to_numpy()
    people["area"] = np.where(np.isin(area, register), area, area // 100 * 100)
    people["ethnicity"] = people["ethnicity"].map({label: i for i, label in enumerate(ETHNICITY_LABELS)})
    return people


@pytest.fixture(scope="module")
def auckland():
    """The Auckland region at scale 0.02, reweighted to the Ministry's population, with vaccine uptake."""
    config = make_config(select={"regions": ["Auckland"]}, scale=0.02, reweight="health_service", vaccine_uptake=True)
    return synthesize_census(config, seed=1)


@pytest.fixture(scope="module")
def ministry_rows() -> pd.DataFrame:
    """vaccine_uptake_by_sa2.csv read independently of the code under test: SA2 x DHB x age group rows."""
    rows = pd.read_csv(HSU, thousands=",", na_values=["Masked"], dtype={"SA2 Code 2018": str})
    rows = rows.loc[rows["SA2 Code 2018"] != "Unknown"]
    return rows.assign(
        area=pd.to_numeric(rows["SA2 Code 2018"]).astype(np.int64),
        dose1=rows["At least partially vaccinated"],
        dose2=rows["Completed primary course"],
    )


def _synthetic_cells(population: Population, keys: list[str]) -> pd.Series:
    frame = pd.DataFrame({k: getattr(population, k) for k in ("area", "age", "sex", "ethnicity")})
    return frame.groupby(keys).size()


def test_counts_equal_census_at_full_scale(nelson, census_people):
    population = nelson.population
    areas = np.unique(population.area)
    census = census_people.loc[census_people["area"].isin(areas)]
    keys = ["area", "age", "ethnicity"]
    expected = census.groupby(keys)["value"].sum().astype(np.int64)
    got = _synthetic_cells(population, keys)
    both = pd.concat([expected.rename("census"), got.rename("synthetic")], axis=1).fillna(0)
    assert (both["census"] == both["synthetic"]).all()
    by_sex = census.loc[census["gender"] != "other"].assign(sex=lambda d: (d["gender"] == "male").astype(int))
    expected = by_sex.groupby(["area", "age", "sex", "ethnicity"])["value"].sum()
    got = _synthetic_cells(population, ["area", "age", "sex", "ethnicity"]).reindex(expected.index, fill_value=0)
    assert (got >= expected).all()  # only 'other' gender (split at random) can add people to a sex cell
    assert (nelson.fit["population_sa2"]["error"] == 0).all()
    assert 40_000 <= population.n_agents <= 60_000


def test_scaled_counts_use_controlled_rounding(census_people):
    population = synthesize_census(make_config(scale=0.1), seed=5).population
    areas = np.unique(population.area)
    census = census_people.loc[census_people["area"].isin(areas) & (census_people["gender"] != "other")]
    cells = (
        census.assign(sex=(census["gender"] == "male").astype(int))
        .groupby(["area", "age", "sex", "ethnicity"])["value"]
        .sum()
        * 0.1
    )
    got = _synthetic_cells(population, ["area", "age", "sex", "ethnicity"]).reindex(cells.index, fill_value=0)
    assert ((got == np.floor(cells)) | (got == np.ceil(cells))).all()
    assert _synthetic_cells(population, ["area"]).sum() == len(population.age)
    totals = census.groupby("area")["value"].sum()
    assert (_synthetic_cells(population, ["area"]).reindex(totals.index) == np.floor(totals * 0.1 + 0.5)).all()


def test_layers_are_contiguous(nelson):
    assert nelson.population.layers == ["household", "school", "workplace"]
    for layer, ids in nelson.population.groups.items():
        used = np.unique(ids[ids >= 0])
        assert used.size and (used == np.arange(used.size)).all(), layer


def test_households(nelson):
    population = nelson.population
    household = population.groups["household"]
    assert (household >= 0).all()  # every agent in exactly one household (one id per agent)
    child = population.age < 18
    adults = np.bincount(household, weights=~child)
    children = np.bincount(household, weights=child)
    assert (adults[children > 0] >= 1).all()
    synthetic = (
        pd.Series(1, index=pd.MultiIndex.from_arrays([adults.astype(int), children.astype(int)]))
        .groupby(level=[0, 1])
        .sum()
    )
    table = pd.read_parquet(DATA / "household_composition.parquet")
    census = table.loc[table["area"].isin(np.unique(population.area))].groupby(["adults", "children"])["num"].sum()
    shares = pd.concat([census / census.sum(), synthetic / synthetic.sum()], axis=1).fillna(0)
    tvd = 0.5 * (shares.iloc[:, 0] - shares.iloc[:, 1]).abs().sum()
    assert tvd < 0.05  # compositions within 5% total variation of the census table (measured: about 0.013)
    assert tvd == pytest.approx(0.5 * nelson.fit["households"]["share_error"].abs().sum())


def _household_ages(population: Population) -> pd.DataFrame:
    """Per household with children: oldest child, youngest adult and whether an adult is 16-50 years older."""
    people = pd.DataFrame({"household": population.groups["household"], "age": population.age})
    child = people["age"] < 18
    oldest_child = people.loc[child].groupby("household")["age"].max()
    adults = people.loc[~child].join(oldest_child.rename("oldest_child"), on="household", how="inner")
    gap = adults["age"] - adults["oldest_child"]
    return pd.DataFrame(
        {
            "oldest_child": oldest_child,
            "youngest_adult": adults.groupby("household")["age"].min(),
            "parent": (gap.between(16, 50)).groupby(adults["household"]).any(),
        }
    )


def test_household_age_structure(nelson):
    ages = _household_ages(nelson.population)
    all_65_plus = (ages["youngest_adult"] >= 65).mean()
    young_gap = (ages["youngest_adult"] - ages["oldest_child"] < 15).mean()
    no_parent = 1 - ages["parent"].mean()
    # Adults placed at random gave 7.9%, 21% and 17% on Nelson (seed 1) and 4.3%, 29%, 13% on all of New Zealand;
    # parents by age give 0-0.02%, about 6% (adult children and other extra adults) and 0 over seeds 0-5 here.
    assert all_65_plus < 0.01 and no_parent < 0.01 and young_gap < 0.12
    table = nelson.fit["household_age_structure"].set_index("quantity")
    assert table.loc["households_with_children", "households"] == len(ages)
    assert table.loc["all_adults_65_plus", "share"] == pytest.approx(all_65_plus)
    assert table.loc["youngest_adult_less_than_15_years_older", "share"] == pytest.approx(young_gap)
    assert table.loc["no_adult_16_to_50_years_older", "share"] == pytest.approx(no_parent)


@pytest.mark.parametrize("seed", range(10))
def test_parents_are_chosen_by_age(seed):
    """One SA2: a child of 10 and adults of 20, 38, 41 and 85; a two-adult household with the child and two
    single-adult households. The parents (26-60 years, partners within 15 years) can only be 38 and 41."""
    age = np.array([10, 20, 38, 41, 85])
    table = pd.DataFrame({"area": [100100, 100100], "adults": [2, 1], "children": [1, 0], "num": [1, 2]})
    households = form_households(
        np.zeros(5, dtype=np.int64), age, np.array([100100]), table, 18, ParentAges(), np.random.default_rng(seed)
    )
    household = households.household
    assert set(age[household == household[0]]) == {10, 38, 41}
    assert sorted(np.bincount(household)) == [1, 1, 3]


@pytest.mark.slow
def test_household_age_structure_all_of_new_zealand():
    """All of New Zealand (about 20 s): parents by age in every region (random adults: 4.3% all 65+, 13% no
    adult 16-50 years older than the oldest child; parents by age: 0.03% and 0.09%, seed 1)."""
    synthesis = synthesize_census(make_config(select={"regions": [], "super_areas": [], "areas": []}), seed=1)
    table = synthesis.fit["household_age_structure"].set_index("quantity")["share"]
    assert table["all_adults_65_plus"] < 0.005 and table["no_adult_16_to_50_years_older"] < 0.005
    ages = _household_ages(synthesis.population)
    assert table["no_adult_16_to_50_years_older"] == pytest.approx(1 - ages["parent"].mean())


def test_schools(nelson):
    population = nelson.population
    config = make_config()
    age, group = population.age, population.groups["school"]
    school, kindergarten = population.extra["school_index"], population.extra["kindergarten_index"]
    pupils = (age >= 5) & (age <= 17)
    assert (group[pupils] >= 0).all() and (school[pupils] >= 0).all()
    assert (school[~pupils] == -1).all()
    schools = pd.read_parquet(DATA / "schools.parquet")
    assert (schools["age_min"].to_numpy()[school[pupils]] <= age[pupils]).all()
    assert (schools["age_max"].to_numpy()[school[pupils]] >= age[pupils]).all()
    in_kindergarten = kindergarten >= 0
    assert (age[in_kindergarten] <= 4).all() and (group[in_kindergarten] >= 0).all()
    assert 0.5 < in_kindergarten.sum() / (age <= 4).sum() < 0.7  # attendance rate 0.6
    assert ((group >= 0) == (pupils | in_kindergarten)).all()
    assert age[group >= 0].max() <= 17  # no adult pupil
    members = group[pupils]
    assert np.bincount(members).max() <= config.class_size
    class_ages = pd.Series(age[pupils]).groupby(members).nunique()
    assert (class_ages == 1).all()
    assert pd.Series(school[pupils]).groupby(members).nunique().max() == 1


def test_work(nelson):
    population = nelson.population
    company, age = population.groups["workplace"], population.age
    employed = company >= 0
    assert ((population.extra["industry"] >= 0) == employed).all()
    assert ((population.extra["workplace_area"] >= 0) == employed).all()
    assert (age[employed] >= 18).all() and (age[employed] <= 64).all()
    working_age = (age >= 18) & (age <= 64)
    assert 0.72 < employed.sum() / working_age.sum() < 0.78
    for name in ("industry", "workplace_area"):
        assert pd.Series(population.extra[name][employed]).groupby(company[employed]).nunique().max() == 1
    assert np.isin(population.extra["workplace_area"][employed], np.unique(population.area)).all()
    assert population.attrs["industry_labels"][0] == "A"
    employment = nelson.fit["employment"]
    assert employment["synthetic_workers"].sum() == employed.sum()


def test_same_seed_same_population(nelson):
    again = synthesize_census(make_config(), seed=3).population
    other = synthesize_census(make_config(), seed=4).population
    for name in ("age", "sex", "ethnicity", "area"):
        assert np.array_equal(getattr(again, name), getattr(nelson.population, name))
    for layer, ids in nelson.population.groups.items():
        assert np.array_equal(again.groups[layer], ids)
    for name, values in nelson.population.extra.items():
        assert np.array_equal(again.extra[name], values)
    assert not np.array_equal(other.groups["household"], nelson.population.groups["household"])


def test_region_and_roundtrip(nelson, tmp_path):
    population = nelson.population
    labels = population.attrs["region_labels"]
    assert {labels[r] for r in np.unique(population.extra["region"])} == {"Nelson"}
    districts = population.attrs["district_labels"]
    assert {districts[d] for d in np.unique(population.extra["district"])} == {"Nelson Marlborough"}
    assert "vaccine_dose1_uptake" not in population.extra  # vaccine_uptake: false by default
    path = write_dataset(population.to_dataset(), tmp_path / "population.zarr", make_config(), seed=3)
    back = Population.from_dataset(read_dataset(path))
    assert list(back.attrs["region_labels"]) == labels and list(back.attrs["district_labels"]) == districts
    assert np.array_equal(back.groups["school"], population.groups["school"])


def test_selection_by_super_area_and_area():
    hierarchy = pd.read_parquet(DATA / "geography_hierarchy.parquet")
    super_area = int(hierarchy.loc[hierarchy["region"] == "Nelson", "super_area"].iloc[0])
    config = make_config(select={"regions": [], "super_areas": [super_area], "areas": [100100]}, scale=0.2)
    population = synthesize_census(config, seed=1).population
    expected = set(hierarchy.loc[hierarchy["super_area"] == super_area, "area"]) | {100100}
    assert set(np.unique(population.area)) <= expected and 100100 in population.area
    with pytest.raises(ValueError, match="Atlantis"):
        synthesize_census(make_config(select={"regions": ["Atlantis"]}), seed=1)


def test_fit_report(nelson, tmp_path):
    paths = write_fit_report(nelson, tmp_path / "fit")
    names = {p.name for p in paths}
    assert {
        "population_sa2.csv",
        "households.csv",
        "household_age_structure.csv",
        "schools.csv",
        "employment.csv",
        "summary.csv",
    } <= names
    assert {"population_pyramid.png", "household_size.png", "school_size.png", "company_size.png"} <= names
    assert all(p.stat().st_size > 0 for p in paths)
    summary = pd.read_csv(tmp_path / "fit" / "summary.csv").set_index("quantity")["value"]
    assert summary["agents"] == nelson.population.n_agents


def test_districts_of_auckland_agents(auckland, ministry_rows):
    population = auckland.population
    labels = population.attrs["district_labels"]
    assert labels == sorted(labels) and len(labels) == 20 and "Unknown" not in labels
    district = np.asarray(labels, dtype=object)[population.extra["district"]]
    assert population.extra["district"].dtype == np.int64 and set(district) == AUCKLAND_DHBS
    cases = pd.read_csv(ROOT / "data" / "nz" / "epi" / "cases_daily_by_location.csv")
    assert set(cases["location"]) >= AUCKLAND_DHBS  # the case series' spelling
    dhb = (
        ministry_rows.sort_values("Population", ascending=False)
        .drop_duplicates("area")
        .set_index("area")["DHB of residence"]
    )
    assert (district == dhb.reindex(population.area).to_numpy()).all()
    summary = auckland.fit["summary"].set_index("quantity")["value"]
    for name in AUCKLAND_DHBS:
        assert summary[f"agents_in_district_{name}"] == (district == name).sum() > 5_000
    assert summary["sa2_district_from_nearest_sa2"] == 1  # 110600, below


def test_sa2_without_ministry_row_takes_the_nearest_district_and_its_uptake(ministry_rows):
    """SA2 110600 (Auckland region, 6 census people aged 12+) has no row in the Ministry's file: it takes the DHB
    of the nearest SA2 (111800, Auckland) and the uptake of Auckland DHB's 12+ group over its published rows."""
    synthesis = synthesize_census(make_config(select={"regions": [], "areas": [110600]}, vaccine_uptake=True), seed=0)
    population = synthesis.population
    assert set(population.area) == {110600} and population.n_agents == 6 and (population.age >= 12).all()
    assert set(population.extra["district"]) == {population.attrs["district_labels"].index("Auckland")}
    group = ministry_rows.loc[(ministry_rows["DHB of residence"] == "Auckland") & (ministry_rows["Age"] == "12+")]
    for dose in ("dose1", "dose2"):
        known = group.dropna(subset=[dose])
        rate = known[dose].sum() / known["Population"].sum()
        assert np.allclose(population.extra[f"vaccine_{dose}_uptake"], rate, atol=1e-6, rtol=0), dose
    summary = synthesis.fit["summary"].set_index("quantity")["value"]
    assert summary["sa2_district_from_nearest_sa2"] == 1
    assert summary["vaccine_uptake_sa2_age_groups_without_ministry_row"] == 2


def test_vaccine_uptake_follows_the_ministry_per_sa2_and_age_group(auckland, ministry_rows):
    population = auckland.population
    dose1, dose2 = population.extra["vaccine_dose1_uptake"], population.extra["vaccine_dose2_uptake"]
    assert dose1.dtype == dose2.dtype == np.float32
    assert ((dose2 >= 0) & (dose2 <= dose1) & (dose1 <= 1)).all()
    under_five = population.age < 5
    assert under_five.sum() > 1_000 and not dose1[under_five].any() and not dose2[under_five].any()
    agents = (
        pd.DataFrame(
            {
                "area": population.area,
                "age_group": np.where(population.age <= 11, "5-11", "12+"),
                "dose1": dose1,
                "dose2": dose2,
            }
        )[~under_five]
        .groupby(["area", "age_group"])
        .mean()
    )
    rows = ministry_rows.set_index(["area", "Age"])
    published = rows.loc[~rows.index.duplicated(keep=False)].dropna(subset=["dose1", "dose2"])
    rates = (
        published[["dose1", "dose2"]]
        .div(published["Population"], axis=0)
        .rename_axis(["area", "age_group"])
        .reindex(agents.index)
    )
    matched = rates.notna().all(axis=1)
    assert matched.sum() > 900  # of 1,027 SA2 x age groups with agents
    assert np.allclose(agents[matched], rates[matched], atol=1e-6, rtol=0)
    # Ormiston East 12+: first dose Masked (the Ministry's band: >95%), 4,416 of 4,681 completed; the fallback
    # (Counties Manukau 12+, 0.89) is raised to the second dose.
    assert agents.loc[(158600, "12+")].tolist() == pytest.approx([4416 / 4681, 4416 / 4681])


def test_vaccine_uptake_fit_report_and_store(auckland, tmp_path):
    table = auckland.fit["vaccine_uptake_by_district"]
    assert set(table["district"]) == AUCKLAND_DHBS
    assert table["agents"].sum() == auckland.population.n_agents
    assert table["age_group"].tolist()[:3] == ["0-4", "5-11", "12+"]
    young = table["age_group"] == "0-4"
    assert (table.loc[young, ["dose1_uptake", "dose2_uptake"]] == 0).all().all()
    assert table.loc[young, "ministry_dose1_uptake"].isna().all()
    for dose in ("dose1", "dose2"):  # within the rounding of scale 0.02 (measured: < 0.002)
        assert np.abs(table.loc[~young, f"{dose}_uptake"] - table.loc[~young, f"ministry_{dose}_uptake"]).max() < 0.005
    summary = auckland.fit["summary"].set_index("quantity")["value"]
    assert summary["vaccine_uptake_sa2_age_groups_dose1_masked"] >= 1
    paths = write_fit_report(auckland, tmp_path / "fit")
    assert pd.read_csv(tmp_path / "fit" / "vaccine_uptake_by_district.csv").shape == table.shape
    assert tmp_path / "fit" / "vaccine_uptake_by_district.csv" in paths
    population = auckland.population
    path = write_dataset(population.to_dataset(), tmp_path / "population.zarr", make_config(), seed=1)
    back = Population.from_dataset(read_dataset(path))
    for name in ("vaccine_dose1_uptake", "vaccine_dose2_uptake", "district"):
        assert back.extra[name].dtype == population.extra[name].dtype
        assert np.array_equal(back.extra[name], population.extra[name])
    assert list(back.attrs["district_labels"]) == population.attrs["district_labels"]


def _corrupt(table: str, change):
    def apply(directory: Path) -> None:
        path = directory / f"{table}.parquet"
        path.write_bytes(b"")  # replace the copy, never the original
        change(pd.read_parquet(DATA / f"{table}.parquet")).to_parquet(path, index=False)

    return apply


def _set(column, row, value):
    def change(df):
        df = df.copy()
        if isinstance(value, str) and pd.api.types.is_numeric_dtype(df[column]):
            df[column] = df[column].astype(str)
        df.loc[row, column] = value
        return df

    return change


MALFORMED = {
    "missing column": (
        "household_composition",
        "num",
        None,
        _corrupt("household_composition", lambda df: df.drop(columns="num")),
    ),
    "negative count": ("household_composition", "num", 7, _corrupt("household_composition", _set("num", 7, -2))),
    "unknown SA2": ("schools", "area", 11, _corrupt("schools", _set("area", 11, 999999))),
    "duplicate key": (
        "geography_location",
        "area",
        2235,
        _corrupt("geography_location", lambda df: pd.concat([df, df.iloc[[5]]])),
    ),
    "wrong dtype": (
        "work_employees",
        "employee_number",
        0,
        _corrupt("work_employees", _set("employee_number", 3, "12")),
    ),
    "unknown category": (
        "population_structure",
        "ethnicity",
        4,
        _corrupt("population_structure", _set("ethnicity", 4, "Martian")),
    ),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_table_stops_the_stage(kind, tmp_path):
    table, column, row, corrupt = MALFORMED[kind]
    data = tmp_path / "census"
    shutil.copytree(DATA, data)
    corrupt(data)
    out = tmp_path / "population.zarr"
    with pytest.raises(CensusTableError) as error:
        synthesis = synthesize_census(make_config(data_dir=str(data)), seed=0)
        write_dataset(synthesis.population.to_dataset(), out, None, seed=0)
    message = str(error.value)
    assert f"{table}.parquet" in message and f"'{column}'" in message
    if row is not None:
        assert f"offending row {row}:" in message
    assert not out.exists()
