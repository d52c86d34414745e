"""The Ministry of Health population (vaccine_uptake_by_sa2.csv): reader, reweighting the synthesis to it, fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from diffabm.population.census import synthesize_census
from diffabm.population.health_service import (
    compare_by_region,
    read_health_service_population,
    reweight_to_health_service,
    vaccine_uptake,
)
from diffabm.population.report import write_fit_report
from diffabm.population.tables import CensusTableError, read_census

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "nz" / "census"
HSU = ROOT / "data" / "nz" / "epi" / "vaccine_uptake_by_sa2.csv"
# Te Akau (straddles two DHBs), Pomare (its code written 2e+05), Te Horo (two DHBs, one without a 5-11 row) and
# an SA2 with census children but no Ministry 5-11 row.
AREAS = [170900, 200000, 236600, 359300]
HEADER = "SA2 Code 2018,DHB of residence,Age,Population,At least partially vaccinated,Completed primary course"


def make_config(**overrides):
    config = OmegaConf.load(ROOT / "conf" / "population" / "census.yaml")
    config.data_dir = str(DATA)
    config.health_service_file = str(HSU)
    return OmegaConf.merge(
        config, {"select": {"regions": [], "super_areas": [], "areas": AREAS}, "reweight": "health_service"}, overrides
    )


@pytest.fixture(scope="module")
def ministry() -> pd.DataFrame:
    """HSU people per SA2 x age group, read independently of the code under test."""
    table = pd.read_csv(HSU, thousands=",", dtype={"SA2 Code 2018": str})
    table["area"] = pd.to_numeric(table["SA2 Code 2018"], errors="coerce")
    return table.groupby(["area", "Age"])["Population"].sum()


def _by_group(population) -> pd.Series:
    group = np.where(population.age < 5, "0-4", np.where(population.age <= 11, "5-11", "12+"))
    return pd.Series(1, index=pd.MultiIndex.from_arrays([population.area, group])).groupby(level=[0, 1]).sum()


def test_reweighting_hits_the_ministry_population_per_sa2_and_age_group(ministry):
    synthesis = synthesize_census(make_config(), seed=2)
    got = _by_group(synthesis.population)
    census = read_census(DATA, [343000, 400004])["population_structure"]
    census = census.loc[census["area"].isin(AREAS)]
    census_5_11 = census.loc[census["age"].between(5, 11)].groupby("area")["value"].sum()
    for area in AREAS:
        for group in ("5-11", "12+"):
            expected = ministry.get((area, group), census_5_11[area] if group == "5-11" else np.nan)
            assert got[(area, group)] == expected, (area, group)  # no Ministry row: the census count is kept
    assert ministry[(170900, "12+")] == 294 + 1427 and got[(200000, "5-11")] == 193  # two DHBs summed; 2e+05
    # Under-fives take their SA2's 5-11 factor.
    census_0_4 = census.loc[census["age"] < 5].groupby("area")["value"].sum()
    for area in (170900, 200000):
        factor = ministry[(area, "5-11")] / census_5_11[area]
        assert abs(got[(area, "0-4")] - census_0_4[area] * factor) < 1
    table = synthesis.fit["population_health_service"]
    assert (table["error"] == 0).all() and (synthesis.fit["population_sa2"]["error"] == 0).all()
    assert synthesis.population.attrs["reweight"] == "health_service"
    labels = np.asarray(synthesis.population.attrs["district_labels"], dtype=object)
    district = pd.Series(labels[synthesis.population.extra["district"]], index=synthesis.population.area)
    assert district.groupby(level=0).unique().map(list).to_dict() == {  # an SA2 in two DHBs: the larger part's
        170900: ["Waikato"],
        200000: ["Lakes"],
        236600: ["MidCentral"],
        359300: ["Southern"],
    }


def test_scaled_reweighting_rounds_each_group(ministry):
    population = synthesize_census(make_config(scale=0.1), seed=4).population
    got = _by_group(population)
    for area in AREAS[:3]:
        for group in ("5-11", "12+"):
            assert abs(got[(area, group)] - 0.1 * ministry[(area, group)]) < 1, (area, group)


def test_fit_report_shows_target_and_synthetic_under_reweighting(tmp_path, ministry):
    synthesis = synthesize_census(make_config(), seed=2)
    write_fit_report(synthesis, tmp_path)
    table = pd.read_csv(tmp_path / "population_health_service.csv")
    assert {"area", "age_group", "census", "hsu", "factor", "target", "synthetic", "error"} <= set(table.columns)
    assert table["synthetic"].sum() == synthesis.population.n_agents
    summary = pd.read_csv(tmp_path / "summary.csv").set_index("quantity")["value"]
    assert summary["hsu_people_in_selected_sa2s"] == ministry.loc[AREAS].sum()
    assert summary["hsu_people_without_census_people_in_age_group"] == 0


def test_masked_cells_keep_the_census_and_under_fives_follow_5_to_11(tmp_path):
    path = tmp_path / "hsu.csv"
    path.write_text(
        f"{HEADER}\n100100,Northland,5-11,20,5,2\n100100,Northland,12+,Masked,0,0\n"
        '100200,Northland,12+,"1,200",900,800\n'
    )
    hsu = read_health_service_population(path)
    assert np.isnan(hsu.set_index(["area", "age_group"]).loc[(100100, "12+"), "population"])
    cells = pd.DataFrame({"area": [100100, 100100, 100100, 100200], "age": [3, 7, 40, 50], "census": [6, 10, 30, 600]})
    reweighting = reweight_to_health_service(cells, hsu)
    assert reweighting.factor.tolist() == [2.0, 2.0, 1.0, 2.0]
    assert reweighting.notes["census_people_kept_without_hsu_figure"] == 30


@pytest.mark.parametrize(
    "column, value, row",
    [
        ("Population", "1,2x4", 1),
        ("Population", "", 0),
        ("Age", "5 to 11", 2),
        ("SA2 Code 2018", "10O100", 0),
        ("At least partially vaccinated", "12x", 3),
        ("Completed primary course", "1,2345", 2),
        ("Completed primary course", ">95%", 4),
    ],
)
def test_malformed_health_service_cell_names_file_column_and_value(tmp_path, column, value, row):
    table = pd.read_csv(HSU, dtype=str, keep_default_na=False, nrows=5)
    table.loc[row, column] = value
    path = tmp_path / "vaccine_uptake_by_sa2.csv"
    table.to_csv(path, index=False)
    with pytest.raises(ValueError) as error:
        read_health_service_population(path)
    message = str(error.value)
    assert isinstance(error.value, CensusTableError) and "\n" not in message
    assert str(path) in message and f"'{column}'" in message and repr(value) in message
    assert f"offending row {row}:" in message


def test_malformed_health_service_file_stops_the_synthesis(tmp_path):
    path = tmp_path / "hsu.csv"
    path.write_text(f"{HEADER}\n170900,Waikato,12+,12.5,5,5\n")
    with pytest.raises(CensusTableError, match=r"hsu\.csv: column 'Population' has a malformed number.*'12\.5'"):
        synthesize_census(make_config(health_service_file=str(path)), seed=0)
    with pytest.raises(ValueError, match=r"population\.reweight"):
        synthesize_census(make_config(reweight="census_2018"), seed=0)


def test_region_table_accounts_for_every_ministry_person():
    tables = read_census(DATA, [343000, 400004])
    hsu = read_health_service_population(HSU)
    table = compare_by_region(tables["population_structure"], tables["geography_hierarchy"], hsu).set_index("region")
    total = table.loc["New Zealand"]
    assert total["hsu_5+"] == 4_967_173 == table.drop("New Zealand")["hsu_5+"].sum()
    assert total["census_0-4"] + total["census_5+"] == tables["population_structure"]["value"].sum()
    assert table.loc["(SA2 Unknown to the Ministry)", "hsu_5+"] == 60_049 + 5_741
    assert 0.7 < total["census_per_hsu"] < 0.8


def test_masked_and_missing_uptake_fall_back_to_the_district(tmp_path):
    """A `Masked` count and an SA2 x age group without a row take their DHB x age group's uptake over the rows
    where it is published; a fallen-back first dose is raised to a published second dose, a second dose never
    exceeds the first; under-fives get 0."""
    path = tmp_path / "hsu.csv"
    path.write_text(
        f'{HEADER}\n100100,Northland,12+,"1,000",900,800\n100100,Northland,5-11,100,50,20\n'
        "100200,Northland,12+,300,100,60\n100300,Northland,12+,200,Masked,Masked\n"
        "100400,Northland,12+,100,Masked,95\n100400,Northland,5-11,50,5,Masked\n"
        "200100,Waikato,12+,100,50,40\n200100,Waikato,5-11,40,20,10\n"
    )
    hsu = read_health_service_population(path)
    uptake = vaccine_uptake(
        hsu, np.array([100100, 100300, 100400, 999900]), np.array(["Northland", "Northland", "Northland", "Waikato"])
    )
    table = uptake.table.set_index(["area", "age_group"])[["dose1", "dose2"]]
    dose1_12, dose2_12 = (900 + 100) / 1300, (800 + 60 + 95) / 1400  # Northland 12+ over the published rows
    expected = {
        (100100, "12+"): (0.9, 0.8),
        (100100, "5-11"): (0.5, 0.2),
        (100300, "12+"): (dose1_12, dose2_12),  # both masked
        (100300, "5-11"): ((50 + 5) / 150, 0.2),  # no row: Northland 5-11
        (100400, "12+"): (0.95, 0.95),  # first dose masked, below the published second
        (100400, "5-11"): (0.1, 0.1),  # second dose masked: Northland's 0.2, capped at the first dose
        (999900, "12+"): (0.5, 0.4),
        (999900, "5-11"): (0.5, 0.25),
    }  # not in the file: its district's
    for key, (dose1, dose2) in expected.items():
        assert table.loc[key].tolist() == pytest.approx([dose1, dose2]), key
    assert uptake.notes == {
        "vaccine_uptake_sa2_age_groups_without_ministry_row": 3,
        "vaccine_uptake_sa2_age_groups_dose1_masked": 2,
        "vaccine_uptake_sa2_age_groups_dose2_masked": 2,
    }
    dose1, dose2 = uptake.of_agents(np.array([0, 1, 2, 2]), np.array([40, 8, 3, 4]))
    assert dose1.dtype == np.float32 and dose1.tolist() == pytest.approx([0.9, 55 / 150, 0, 0])
    assert dose2.tolist() == pytest.approx([0.8, 0.2, 0, 0])
    with pytest.raises(ValueError, match=r"SA2 999900, age group 5-11: no vaccine uptake .*'Tairawhiti'"):
        vaccine_uptake(hsu, np.array([999900]), np.array(["Tairawhiti"]))
