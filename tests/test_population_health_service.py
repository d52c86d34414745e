"""The Ministry of Health population (vaccine_uptake_by_sa2.csv): reader, reweighting the synthesis to it, fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from diffabm.population.census import synthesize_census
from diffabm.population.health_service import (compare_by_region, read_health_service_population,
                                               reweight_to_health_service)
from diffabm.population.report import write_fit_report
from diffabm.population.tables import CensusTableError, read_census

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "nz" / "census"
HSU = ROOT / "data" / "nz" / "epi" / "vaccine_uptake_by_sa2.csv"
# Te Akau (straddles two DHBs), Pomare (its code written 2e+05), Te Horo (two DHBs, one without a 5-11 row) and
# an SA2 with census children but no Ministry 5-11 row.
AREAS = [170900, 200000, 236600, 359300]


def make_config(**overrides):
    config = OmegaConf.load(ROOT / "conf" / "population" / "census.yaml")
    config.data_dir = str(DATA)
    config.health_service_file = str(HSU)
    return OmegaConf.merge(config, {"select": {"regions": [], "super_areas": [], "areas": AREAS},
                                    "reweight": "health_service"}, overrides)


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
    path.write_text('SA2 Code 2018,DHB of residence,Age,Population\n'
                    '100100,Northland,5-11,20\n100100,Northland,12+,Masked\n100200,Northland,12+,"1,200"\n')
    hsu = read_health_service_population(path)
    assert np.isnan(hsu.set_index(["area", "age_group"]).loc[(100100, "12+"), "population"])
    cells = pd.DataFrame({"area": [100100, 100100, 100100, 100200], "age": [3, 7, 40, 50],
                          "census": [6, 10, 30, 600]})
    reweighting = reweight_to_health_service(cells, hsu)
    assert reweighting.factor.tolist() == [2.0, 2.0, 1.0, 2.0]
    assert reweighting.notes["census_people_kept_without_hsu_figure"] == 30


@pytest.mark.parametrize("column, value, row", [
    ("Population", "1,2x4", 1), ("Population", "", 0), ("Age", "5 to 11", 2), ("SA2 Code 2018", "10O100", 0)])
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
    path.write_text("SA2 Code 2018,DHB of residence,Age,Population\n170900,Waikato,12+,12.5\n")
    with pytest.raises(CensusTableError, match=r"hsu\.csv: column 'Population' has a malformed number.*'12\.5'"):
        synthesize_census(make_config(health_service_file=str(path)), seed=0)
    with pytest.raises(ValueError, match="population.reweight"):
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
