"""Work: employment, workplace SA2 from commute flows, industry from employee counts, companies by size."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from diffabm.population.sampling import choose_within, draw_weighted_in_segments, group_starts
from diffabm.population.tables import COMMUTE_MODES, INDUSTRY_NAMES

INDUSTRIES = tuple(INDUSTRY_NAMES)


@dataclass
class Employment:
    """Company id per agent (-1 = not employed), workplace SA2 and industry code, fit tables."""

    company: np.ndarray
    workplace_area: np.ndarray
    industry: np.ndarray
    fit: dict[str, pd.DataFrame]
    notes: dict[str, float]


def _workplaces(
    home: np.ndarray, areas: np.ndarray, commute: pd.DataFrame, within_selection: bool, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Workplace SA2 per worker drawn from the commute flows of the home SA2 (home SA2 where none)."""
    flows = commute.loc[commute["area_home"].isin(areas)]
    weight = flows[list(COMMUTE_MODES)].sum(axis=1).to_numpy()
    keep = weight > 0
    if within_selection:
        keep &= flows["area_work"].isin(areas).to_numpy()
    flows, weight = flows.loc[keep], weight[keep]
    home_of_flow = np.searchsorted(areas, flows["area_home"].to_numpy())
    order = np.argsort(home_of_flow, kind="stable")
    starts = group_starts(home_of_flow[order], len(areas))
    has = starts[home + 1] > starts[home]
    work = areas[home].copy()
    index = draw_weighted_in_segments(home[has], starts, weight[order], rng)
    work[has] = flows["area_work"].to_numpy()[order][index]
    return work, ~has


def _industries(work: np.ndarray, employees: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    """Industry code per worker in proportion to the employees of its workplace SA2 (national shares where none)."""
    table = employees.loc[employees["employee_number"] > 0].sort_values(["area", "business_code"])
    code = np.searchsorted(INDUSTRIES, table["business_code"].to_numpy(dtype=str))
    weight = table["employee_number"].to_numpy(np.float64)
    work_areas = np.unique(table["area"].to_numpy())
    starts = np.searchsorted(table["area"].to_numpy(), np.r_[work_areas, np.iinfo(np.int64).max])
    position = np.minimum(np.searchsorted(work_areas, work), max(work_areas.size - 1, 0))
    has = (work_areas[position] == work) if work_areas.size else np.zeros(work.shape[0], bool)
    industry = np.empty(work.shape[0], dtype=np.int64)
    industry[has] = code[draw_weighted_in_segments(position[has], starts, weight, rng)]
    national = np.bincount(code, weights=weight, minlength=len(INDUSTRIES))
    industry[~has] = np.searchsorted(np.cumsum(national), rng.random((~has).sum()) * national.sum(), side="right")
    return industry


def employ(
    age: np.ndarray,
    area_index: np.ndarray,
    areas: np.ndarray,
    commute: pd.DataFrame,
    employees: pd.DataFrame,
    employers: pd.DataFrame,
    config,
    scale: float,
    rng: np.random.Generator,
) -> Employment:
    """Employ working-age adults at the configured rate and group them into companies.

    Companies of an SA2 x industry cell number round(workers / mean size), mean size = employees / employers
    of the cell (national mean of the industry where the cell has no employers); workers are split among them
    at uniformly random cut points, which gives a skewed, geometric-like size distribution.
    """
    lo, hi = config.working_age
    eligible = np.flatnonzero((age >= lo) & (age <= hi))
    workers = eligible[rng.random(eligible.size) < config.employment_rate]
    work, no_flows = _workplaces(area_index[workers], areas, commute, config.work_within_selection, rng)
    industry = _industries(work, employees, rng)

    cells = pd.merge(employees, employers, on=["area", "business_code"], how="outer").fillna(0)
    cells["industry"] = np.searchsorted(INDUSTRIES, cells["business_code"].to_numpy(dtype=str))
    national = cells.groupby("industry")[["employee_number", "employer_number"]].sum()
    national_size = (national["employee_number"] / national["employer_number"].clip(lower=1)).clip(lower=1)
    key = work * 32 + industry
    cell_keys, cell_of, n = np.unique(key, return_inverse=True, return_counts=True)
    table = cells.set_index(cells["area"].to_numpy() * 32 + cells["industry"].to_numpy())
    employee_n = table["employee_number"].reindex(cell_keys).to_numpy()
    employer_n = table["employer_number"].reindex(cell_keys).to_numpy()
    mean_size = np.where(employer_n > 0, employee_n / np.where(employer_n > 0, employer_n, 1), employee_n)
    fallback = national_size.reindex(cell_keys % 32).to_numpy()
    mean_size = np.maximum(np.where(np.isnan(mean_size) | (mean_size <= 0), fallback, mean_size), 1.0)
    k = np.clip(np.floor(n / mean_size + 0.5), 1, n).astype(np.int64)

    order = np.lexsort((rng.random(workers.size), cell_of))
    sorted_cells = cell_of[order]
    first = np.r_[True, sorted_cells[1:] != sorted_cells[:-1]] if workers.size else np.zeros(0, bool)
    gaps = np.flatnonzero(~first)
    cut = np.zeros(workers.size, dtype=bool)
    cut[gaps[choose_within(sorted_cells[gaps], k - 1, cell_keys.size, rng)]] = True
    company = np.full(age.shape[0], -1, dtype=np.int64)
    company[workers[order]] = np.cumsum(first | cut) - 1
    workplace_area = np.full(age.shape[0], -1, dtype=np.int64)
    workplace_area[workers] = work
    industry_of = np.full(age.shape[0], -1, dtype=np.int64)
    industry_of[workers] = industry

    synthetic = pd.DataFrame(
        {"area": cell_keys // 32, "industry": cell_keys % 32, "synthetic_workers": n, "companies": k}
    )
    census = cells.loc[
        cells["area"].isin(np.union1d(areas, cell_keys // 32)),
        ["area", "industry", "employee_number", "employer_number"],
    ]
    fit = pd.merge(census, synthetic, on=["area", "industry"], how="outer").fillna(0)
    fit = fit.astype({c: np.int64 for c in ("employee_number", "employer_number", "synthetic_workers", "companies")})
    fit.insert(2, "business_code", np.asarray(INDUSTRIES)[fit["industry"].to_numpy()])
    fit["census_employees_scaled"] = fit["employee_number"] * scale
    fit["error"] = fit["synthetic_workers"] - fit["census_employees_scaled"]
    sizes = np.bincount(np.bincount(company[company >= 0]))
    company_size = pd.DataFrame({"size": np.arange(sizes.size), "companies": sizes}).loc[lambda d: d["companies"] > 0]
    notes = {
        "working_age_people": float(eligible.size),
        "employed": float(workers.size),
        "workers_without_commute_flows": float(no_flows.sum()),
        "workers_outside_home_sa2": float((work != areas[area_index[workers]]).sum()),
        "companies": float(k.sum()),
        "census_employees_in_selection": float(cells.loc[cells["area"].isin(areas), "employee_number"].sum()),
    }
    return Employment(
        company,
        workplace_area,
        industry_of,
        {"employment": fit, "company_size": company_size.reset_index(drop=True)},
        notes,
    )
