"""A seeded toy population: households, school classes and workplaces in areas of ~2,000 agents, 5 areas a region."""

from __future__ import annotations

import numpy as np

from diffabm.population.schema import ETHNICITY_LABELS, Population

HOUSEHOLD_SIZE_SHARES = (0.23, 0.32, 0.16, 0.16, 0.08, 0.05)  # sizes 1..6, NZ 2018 census (rounded)
ETHNICITY_SHARES = (0.64, 0.15, 0.07, 0.12, 0.02)  # NZ 2018 census, prioritised, rounded


def _rank_within(keys: np.ndarray) -> np.ndarray:
    """Position of each element among the elements with the same key (keys need not be sorted)."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_keys)) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, keys.size]))
    rank = np.empty_like(keys)
    rank[order] = np.arange(keys.size) - run_start
    return rank


def toy_population(
    n_agents: int,
    seed: int = 0,
    area_size: int = 2_000,
    areas_per_school: int = 3,
    areas_per_region: int = 5,
    class_size: int = 25,
    employment_rate: float = 0.75,
    mean_company_size: float = 12.0,
) -> Population:
    """Generate `n_agents` agents in households, school classes and companies, in areas and regions
    (`extra["region"]`, `areas_per_region` areas each)."""
    if n_agents < 1:
        raise ValueError(f"toy population: n_agents must be >= 1, got {n_agents}")
    rng = np.random.default_rng(seed)
    sizes = rng.choice(np.arange(1, 7), size=n_agents // 2 + 1, p=HOUSEHOLD_SIZE_SHARES)
    sizes = sizes[: np.searchsorted(np.cumsum(sizes), n_agents) + 1]
    sizes[-1] -= sizes.sum() - n_agents
    household = np.repeat(np.arange(sizes.size), sizes)
    position = np.arange(n_agents) - np.repeat(np.cumsum(sizes) - sizes, sizes)

    is_adult = (position == 0) | ((position == 1) & (rng.random(n_agents) < 0.75)) | (rng.random(n_agents) < 0.15)
    age = np.where(is_adult, rng.integers(18, 90, n_agents), rng.integers(0, 18, n_agents))
    sex = rng.integers(0, 2, n_agents)
    ethnicity = np.repeat(rng.choice(len(ETHNICITY_LABELS), size=sizes.size, p=ETHNICITY_SHARES), sizes)
    area_index = household * n_agents // max(sizes.size, 1) // area_size
    area = 100_000 + area_index

    pupil = (age >= 5) & (age <= 17)
    school_key = (area_index // areas_per_school) * 13 + (age - 5)
    school = np.full(n_agents, -1)
    class_key = school_key[pupil] * n_agents + _rank_within(school_key[pupil]) // class_size
    school[pupil] = np.unique(class_key, return_inverse=True)[1]

    worker = (age >= 18) & (age <= 64) & (rng.random(n_agents) < employment_rate)
    workers = rng.permutation(np.flatnonzero(worker))
    company_sizes = np.maximum(1, rng.geometric(1.0 / mean_company_size, size=workers.size)).astype(int)
    company_sizes = company_sizes[: np.searchsorted(np.cumsum(company_sizes), workers.size) + 1]
    workplace = np.full(n_agents, -1)
    workplace[workers] = np.repeat(np.arange(company_sizes.size), company_sizes)[: workers.size]

    return Population(
        age=age.astype(np.int64),
        sex=sex.astype(np.int64),
        ethnicity=ethnicity.astype(np.int64),
        area=area.astype(np.int64),
        groups={"household": household, "school": school, "workplace": workplace},
        extra={"region": (area_index // areas_per_region).astype(np.int64)},
        attrs={
            "generator": "diffabm.population.toy.toy_population",
            "region_labels": [f"toy region {k}" for k in range(area_index.max() // areas_per_region + 1)],
        },
    )
