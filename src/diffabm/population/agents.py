"""Agents from the population table: per SA2, counts by age x sex x ethnicity, scaled by controlled rounding."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from diffabm.population.sampling import controlled_round
from diffabm.population.schema import ETHNICITY_LABELS, SEX_LABELS


@dataclass
class Agents:
    """Agent attributes, sorted by home area index; `area_index` indexes `areas` (selected SA2 codes)."""

    age: np.ndarray
    sex: np.ndarray
    ethnicity: np.ndarray
    area_index: np.ndarray
    areas: np.ndarray
    cells: pd.DataFrame  # area, age, sex, ethnicity, census, target (census x factor x scale), synthetic


def census_cells(population: pd.DataFrame, areas: np.ndarray, rng: np.random.Generator) -> tuple[pd.DataFrame, int]:
    """Census counts of the selected areas by area x age x sex x ethnicity (codes); gender 'other' split at random.

    Returns the cells and the number of people of gender 'other' that were reallocated.
    """
    table = population.loc[population["area"].isin(areas)]
    sex = table["gender"].map({label: code for code, label in enumerate(SEX_LABELS)}).fillna(-1).to_numpy(np.int64)
    value = table["value"].to_numpy(np.int64)
    other = sex < 0
    to_male = rng.binomial(value[other], 0.5)
    cells = pd.DataFrame(
        {
            "area": np.concatenate([table["area"].to_numpy()[~other]] + [table["area"].to_numpy()[other]] * 2),
            "age": np.concatenate([table["age"].to_numpy()[~other]] + [table["age"].to_numpy()[other]] * 2),
            "sex": np.concatenate([sex[~other], np.zeros(other.sum(), np.int64), np.ones(other.sum(), np.int64)]),
            "ethnicity": np.concatenate(
                [table["ethnicity"].to_numpy()[~other]] + [table["ethnicity"].to_numpy()[other]] * 2
            ),
            "census": np.concatenate([value[~other], value[other] - to_male, to_male]),
        }
    )
    cells["ethnicity"] = cells["ethnicity"].map({label: code for code, label in enumerate(ETHNICITY_LABELS)})
    cells = cells.groupby(["area", "age", "sex", "ethnicity"], as_index=False, sort=True)["census"].sum()
    return cells.loc[cells["census"] > 0].reset_index(drop=True), int(value[other].sum())


def make_agents(
    cells: pd.DataFrame,
    areas: np.ndarray,
    scale: float,
    rng: np.random.Generator,
    factor: np.ndarray | None = None,
    group: np.ndarray | None = None,
) -> Agents:
    """Expand census cells into agents, each cell's target being census x `factor` x scale.

    Without `factor` each SA2 total is round(scale x total) exactly (the census itself at scale 1); with it
    (a reweighting) each `group` (compact index per cell, e.g. SA2 x age group) totals round(its target).
    Cells are rounded by controlled rounding, so every cell count is the floor or the ceiling of its target.
    """
    area_index = np.searchsorted(areas, cells["area"].to_numpy())
    census = cells["census"].to_numpy(np.int64)
    target = census * (1.0 if factor is None else factor) * scale
    if factor is None:
        totals = np.floor(np.bincount(area_index, weights=census, minlength=len(areas)) * scale + 0.5)
        counts = census if scale == 1.0 else controlled_round(target, area_index, len(areas), rng, totals)
    else:
        counts = controlled_round(target, group, int(group.max(initial=-1)) + 1, rng)
    cells = cells.assign(target=target, synthetic=counts)
    return Agents(
        age=np.repeat(cells["age"].to_numpy(np.int64), counts),
        sex=np.repeat(cells["sex"].to_numpy(np.int64), counts),
        ethnicity=np.repeat(cells["ethnicity"].to_numpy(np.int64), counts),
        area_index=np.repeat(area_index, counts),
        areas=areas,
        cells=cells,
    )
