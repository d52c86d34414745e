"""Census-based synthesis of a New Zealand population (stage `synthesize`).

Agents come from the SA2 x age x sex x ethnicity census counts, optionally reweighted to the Ministry of
Health's population per SA2 x age group (`reweight: health_service`); they are grouped into households
following each SA2's household compositions (parents chosen by age), into school classes and kindergarten
groups by distance and capacity, and into companies via commute flows and business counts. Every agent has its
SA2's District Health Board and, with `vaccine_uptake: true`, its SA2 x age group's vaccine uptake (both from
the Ministry of Health's file, `diffabm.population.health_service`).
`CensusSynthesis.fit` holds the fit tables.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from diffabm.population.agents import census_cells, make_agents
from diffabm.population.health_service import (
    UNKNOWN_AREA,
    Reweighting,
    district_labels,
    districts,
    read_health_service_population,
    reweight_to_health_service,
    vaccine_uptake,
)
from diffabm.population.households import ParentAges, form_households
from diffabm.population.schema import Population
from diffabm.population.schools import enrol
from diffabm.population.tables import INDUSTRY_NAMES, CensusTables, read_census
from diffabm.population.work import INDUSTRIES, employ

PROJECT_ROOT = Path(__file__).resolve().parents[3]
UPTAKE_FIELDS = ("vaccine_dose1_uptake", "vaccine_dose2_uptake")  # extra fields with `vaccine_uptake: true`


@dataclass
class CensusSynthesis:
    """The synthetic population, its fit tables (name -> DataFrame) and per-step timings."""

    population: Population
    fit: dict[str, pd.DataFrame]
    timings: dict[str, dict[str, float]] = field(default_factory=dict)


def _data_dir(path: str) -> Path:
    """`data_dir` as given, or relative to the project root when it does not exist from here."""
    path = Path(path)
    return path if path.is_absolute() or path.exists() else PROJECT_ROOT / path


def select_areas(hierarchy: pd.DataFrame, population: pd.DataFrame, select) -> np.ndarray:
    """SA2 codes (sorted) with people in the union of the selected regions, super_areas and areas; all if none."""
    regions = list((select or {}).get("regions") or [])
    super_areas = [int(x) for x in (select or {}).get("super_areas") or []]
    codes = [int(x) for x in (select or {}).get("areas") or []]
    for name, values, known in (
        ("regions", regions, hierarchy["region"]),
        ("super_areas", super_areas, hierarchy["super_area"]),
        ("areas", codes, hierarchy["area"]),
    ):
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"select.{name}: unknown {unknown}; known: {sorted(set(known))[:40]}")
    populated = np.unique(population["area"].to_numpy())
    if not (regions or super_areas or codes):
        return populated
    chosen = hierarchy.loc[
        hierarchy["region"].isin(regions) | hierarchy["super_area"].isin(super_areas) | hierarchy["area"].isin(codes),
        "area",
    ].to_numpy()
    areas = np.intersect1d(populated, chosen)
    if not areas.size:
        raise ValueError(f"selection {dict(select)} contains no people")
    return areas


def _population_fit(cells: pd.DataFrame, areas: np.ndarray, rounding_group: np.ndarray) -> dict[str, pd.DataFrame]:
    """Synthetic vs target (census x reweighting factor x scale) counts per SA2 and by age x sex x ethnicity.

    The SA2 error is the synthetic count minus the sum, over the SA2's rounding groups (the SA2, or its age
    groups when reweighted), of round(group target): zero when controlled rounding hit every total.
    """
    cells = cells.assign(cell_error=cells["synthetic"] - cells["target"])
    per_area = cells.groupby("area").agg(
        census=("census", "sum"),
        target=("target", "sum"),
        synthetic=("synthetic", "sum"),
        max_abs_cell_error=("cell_error", lambda e: e.abs().max()),
    )
    per_area = per_area.reindex(areas, fill_value=0).rename_axis("area").reset_index()
    groups = cells.groupby(rounding_group).agg(area=("area", "first"), target=("target", "sum"))
    expected = np.floor(groups["target"] + 0.5 + 1e-9).groupby(groups["area"]).sum()
    per_area["error"] = per_area["synthetic"] - expected.reindex(areas, fill_value=0).to_numpy()
    margins = cells.groupby(["age", "sex", "ethnicity"], as_index=False)[["census", "target", "synthetic"]].sum()
    margins["error"] = margins["synthetic"] - margins["target"]
    return {"population_sa2": per_area, "population_age_sex_ethnicity": margins}


def _reweighting(
    config, cells: pd.DataFrame, hierarchy: pd.DataFrame, areas: np.ndarray, hsu: pd.DataFrame
) -> Reweighting | None:
    """The reweighting that `config.reweight` asks for (None: the census table's people as they are)."""
    if config.reweight is None:
        return None
    if config.reweight != "health_service":
        raise ValueError(f"population.reweight is {config.reweight!r}; expected null or 'health_service'")
    reweighting = reweight_to_health_service(cells, hsu)
    chosen = select_areas(hierarchy, hsu.loc[hsu["area"] != UNKNOWN_AREA], config.select)
    missing = hsu["area"].isin(np.setdiff1d(chosen, areas))
    reweighting.notes["hsu_people_in_selected_sa2s_without_census_people"] = float(hsu.loc[missing, "population"].sum())
    return reweighting


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def synthesize_census(config, seed: int) -> CensusSynthesis:
    """Synthesise the selected population from the census tables (config: conf/population/census.yaml)."""
    timings: dict[str, dict[str, float]] = {}
    clock = time.perf_counter()

    def tick(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[step] = {"seconds": now - clock, "peak_rss_mb": _rss_mb()}
        clock = now

    scale = float(config.scale)
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    rng_cells, rng_agents, rng_households, rng_schools, rng_work = (
        np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(5)
    )
    tables: CensusTables = read_census(_data_dir(config.data_dir), config.exclude_areas or ())
    hsu = read_health_service_population(_data_dir(config.health_service_file))
    hierarchy = tables["geography_hierarchy"]
    areas = select_areas(hierarchy, tables["population_structure"], config.select)
    tick("read")

    cells, other = census_cells(tables["population_structure"], areas, rng_cells)
    reweighting = _reweighting(config, cells, hierarchy, areas, hsu)
    if reweighting is None:
        agents = make_agents(cells, areas, scale, rng_agents)
        rounding_group = np.searchsorted(areas, cells["area"].to_numpy())
    else:
        agents = make_agents(cells, areas, scale, rng_agents, reweighting.factor, reweighting.group)
        rounding_group = reweighting.group
    tick("agents")
    households = form_households(
        agents.area_index,
        agents.age,
        areas,
        tables["household_composition"],
        int(config.adult_age),
        ParentAges.from_config(config),
        rng_households,
    )
    tick("households")
    location = tables["geography_location"].set_index("area").loc[areas]
    enrolment = enrol(
        agents.age,
        agents.area_index,
        location["latitude"].to_numpy(),
        location["longitude"].to_numpy(),
        tables["schools"],
        tables["kindergartens"],
        config,
        scale,
        rng_schools,
    )
    tick("schools")
    employment = employ(
        agents.age,
        agents.area_index,
        areas,
        tables["commute_travel_to_work"],
        tables["work_employees"],
        tables["work_employers"],
        config,
        scale,
        rng_work,
    )
    tick("work")

    district_names, districts_from_nearest = districts(hsu, tables["geography_location"], areas)
    dhb_labels = district_labels(hsu)
    district = np.searchsorted(dhb_labels, district_names.astype(str))[agents.area_index].astype(np.int64)
    uptake = vaccine_uptake(hsu, areas, district_names) if config.vaccine_uptake else None
    doses = {} if uptake is None else dict(zip(UPTAKE_FIELDS, uptake.of_agents(agents.area_index, agents.age)))
    hierarchy = hierarchy.set_index("area").loc[areas]
    region_labels = sorted(set(tables["geography_hierarchy"]["region"]))
    region = np.searchsorted(region_labels, hierarchy["region"].to_numpy(dtype=str))[agents.area_index]
    population = Population(
        age=agents.age,
        sex=agents.sex,
        ethnicity=agents.ethnicity,
        area=areas[agents.area_index],
        groups={"household": households.household, "school": enrolment.group, "workplace": employment.company},
        extra={
            "region": region.astype(np.int64),
            "super_area": hierarchy["super_area"].to_numpy()[agents.area_index].astype(np.int64),
            "school_index": enrolment.school_index,
            "kindergarten_index": enrolment.kindergarten_index,
            "workplace_area": employment.workplace_area,
            "industry": employment.industry,
            "district": district,
            **doses,
        },
        attrs={
            "source": "census",
            "scale": scale,
            "reweight": config.reweight or "none",
            "adult_age": int(config.adult_age),
            "region_labels": region_labels,
            "district_labels": dhb_labels,
            "industry_labels": list(INDUSTRIES),
            "industry_names": [INDUSTRY_NAMES[code] for code in INDUSTRIES],
            "school_index_table": "schools.parquet row (-1 = none)",
            "kindergarten_index_table": "kindergartens.parquet row (-1 = none)",
        },
    )
    notes = {
        "agents": float(population.n_agents),
        "sa2_selected": float(areas.size),
        "census_people_selected": float(cells["census"].sum()),
        "gender_other_reallocated": float(other),
        **tables.notes,
        **({} if reweighting is None else reweighting.notes),
        **households.notes,
        **enrolment.notes,
        **employment.notes,
        "sa2_district_from_nearest_sa2": float(districts_from_nearest),
        **{
            f"agents_in_district_{dhb_labels[k]}": float(count)
            for k, count in enumerate(np.bincount(district, minlength=len(dhb_labels)))
            if count
        },
        **({} if uptake is None else uptake.notes),
    }
    fit = {
        "summary": pd.DataFrame({"quantity": list(notes), "value": list(notes.values())}),
        **_population_fit(agents.cells, areas, rounding_group),
        **({} if reweighting is None else {"population_health_service": reweighting.fit(agents.cells)}),
        **households.fit,
        "schools": enrolment.fit,
        **employment.fit,
        **(
            {}
            if uptake is None
            else {"vaccine_uptake_by_district": uptake.fit(agents.area_index, agents.age, *doses.values())}
        ),
    }
    tick("finish")
    timings["total"] = {"seconds": sum(t["seconds"] for t in timings.values()), "peak_rss_mb": _rss_mb()}
    return CensusSynthesis(population, fit, timings)
