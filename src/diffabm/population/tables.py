"""Read and validate the Stats NZ census tables (SA2 level) that the census synthesiser uses."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from diffabm.population.schema import ETHNICITY_LABELS

COMMUTE_MODES = (
    "Work_at_home",
    "Drive_a_private_car_truck_or_van",
    "Drive_a_company_car_truck_or_van",
    "Passenger_in_a_car_truck_van_or_company_bus",
    "Public_bus",
    "Train",
    "Bicycle",
    "Walk_or_jog",
    "Ferry",
    "Other",
)
GENDERS = ("female", "male", "other")
INDUSTRY_NAMES = {
    "A": "Agriculture, Forestry and Fishing",
    "B": "Mining",
    "C": "Manufacturing",
    "D": "Electricity, Gas, Water and Waste Services",
    "E": "Construction",
    "F": "Wholesale Trade",
    "G": "Retail Trade",
    "H": "Accommodation and Food Services",
    "I": "Transport, Postal and Warehousing",
    "J": "Information Media and Telecommunications",
    "K": "Financial and Insurance Services",
    "L": "Rental, Hiring and Real Estate Services",
    "M": "Professional, Scientific and Technical Services",
    "N": "Administrative and Support Services",
    "O": "Public Administration and Safety",
    "P": "Education and Training",
    "Q": "Health Care and Social Assistance",
    "R": "Arts and Recreation Services",
    "S": "Other Services",
}

# Column kinds: "int" integer dtype; "count" numeric, whole, >= 0; "float" finite numeric; "str" strings.
_LOCATION = {"latitude": "float", "longitude": "float"}
SPECS: dict[str, dict] = {
    "geography_location": {"columns": {"area": "int", **_LOCATION}, "keys": ("area",)},
    "geography_hierarchy": {"columns": {"region": "str", "super_area": "int", "area": "int"}, "keys": ("area",)},
    "population_structure": {
        "columns": {"area": "int", "ethnicity": "str", "age": "count", "gender": "str", "value": "count"},
        "keys": ("area", "ethnicity", "age", "gender"),
        "categories": {"ethnicity": ETHNICITY_LABELS, "gender": GENDERS},
    },
    "household_composition": {
        "columns": {"area": "int", "adults": "count", "children": "count", "num": "count"},
        "keys": ("area", "adults", "children"),
    },
    "schools": {
        "columns": {
            "area": "int",
            "max_students": "count",
            "sector": "str",
            **_LOCATION,
            "age_min": "count",
            "age_max": "count",
        },
        "keys": (),
    },
    "kindergartens": {
        "columns": {
            "area": "int",
            "max_students": "count",
            "sector": "str",
            **_LOCATION,
            "age_min": "count",
            "age_max": "count",
        },
        "keys": (),
    },
    "work_employees": {
        "columns": {"area": "int", "business_code": "str", "employee_number": "count"},
        "keys": ("area", "business_code"),
        "categories": {"business_code": tuple(INDUSTRY_NAMES)},
    },
    "work_employers": {
        "columns": {"area": "int", "business_code": "str", "employer_number": "count"},
        "keys": ("area", "business_code"),
        "categories": {"business_code": tuple(INDUSTRY_NAMES)},
    },
    "commute_travel_to_work": {
        "columns": {"area_home": "int", "area_work": "int", **{mode: "count" for mode in COMMUTE_MODES}},
        "keys": ("area_home", "area_work"),
    },
    "deprivation": {"columns": {"area": "int", "deprivation": "float"}, "keys": ("area",)},
    "hospitals": {"columns": {"area": "int", **_LOCATION, "beds": "count"}, "keys": ()},
}
AREA_COLUMNS = {name: tuple(c for c in spec["columns"] if c.startswith("area")) for name, spec in SPECS.items()}


class CensusTableError(ValueError):
    """A census table is malformed: names the file, the column and an offending row."""

    def __init__(self, path: Path | str, column: str, problem: str, row: int | None = None, record=None):
        where = "" if row is None else f"; offending row {row}: {record}"
        super().__init__(f"{path}: column '{column}' {problem}{where}")
        self.path, self.column, self.row = str(path), column, row


@dataclass
class CensusTables:
    """The validated tables (areas of `population_structure` mapped to SA2 2018 codes) and what reconciling them
    took."""

    tables: dict[str, pd.DataFrame]
    notes: dict[str, float] = field(default_factory=dict)

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.tables[name]


def _fail(path: Path, df: pd.DataFrame, column: str, mask: np.ndarray, problem: str) -> None:
    """Raise CensusTableError naming the first row (its row number in the file) where `mask` holds."""
    position = int(np.flatnonzero(np.asarray(mask))[0])
    raise CensusTableError(path, column, problem, int(df.index[position]), df.iloc[[position]].to_dict("records")[0])


def _check_column(path: Path, df: pd.DataFrame, column: str, kind: str) -> None:
    values = df[column]
    if values.isna().any():
        _fail(path, df, column, values.isna().to_numpy(), "has missing values")
    if kind == "str":
        if not (pd.api.types.is_string_dtype(values) or values.dtype == object):
            _fail(path, df, column, np.ones(len(df), bool), f"has dtype {values.dtype}, expected strings")
        not_str = ~values.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
        if not_str.any():
            _fail(path, df, column, not_str, f"has dtype {values.dtype} with non-string values, expected strings")
        return
    expected = "integers" if kind == "int" else "numbers"
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if not numeric or (kind == "int" and not pd.api.types.is_integer_dtype(values)):
        is_number = values.map(
            lambda v: isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
        ).to_numpy(dtype=bool)
        if kind == "int" and is_number.all():
            is_number = values.to_numpy(dtype=np.float64) == np.floor(values.to_numpy(dtype=np.float64))
        _fail(
            path,
            df,
            column,
            ~is_number if (~is_number).any() else np.ones(len(df), bool),
            f"has dtype {values.dtype}, expected {expected}",
        )
    array = values.to_numpy(dtype=np.float64)
    if not np.isfinite(array).all():
        _fail(path, df, column, ~np.isfinite(array), "has non-finite values")
    if kind == "count":
        if (array < 0).any():
            _fail(path, df, column, array < 0, "has negative counts")
        if (array != np.floor(array)).any():
            _fail(path, df, column, array != np.floor(array), "has non-integer counts")


def read_table(data_dir: Path, name: str) -> pd.DataFrame:
    """Read `<name>.parquet`, check required columns, dtypes, values and unique keys; raise CensusTableError."""
    spec = SPECS[name]
    path = Path(data_dir) / f"{name}.parquet"
    if not path.exists():
        raise CensusTableError(path, "*", "cannot be read: file does not exist")
    present = pq.read_schema(path).names
    for column in spec["columns"]:
        if column not in present:
            raise CensusTableError(path, column, f"is missing (columns present: {present})")
    df = pd.read_parquet(path, columns=list(spec["columns"])).reset_index(drop=True)
    for column, kind in spec["columns"].items():
        _check_column(path, df, column, kind)
    for column, allowed in spec.get("categories", {}).items():
        bad = ~df[column].isin(allowed).to_numpy()
        if bad.any():
            _fail(path, df, column, bad, f"has values outside {list(allowed)}")
    if {"age_min", "age_max"} <= set(df.columns):
        bad = (df["age_min"] > df["age_max"]).to_numpy()
        if bad.any():
            _fail(path, df, "age_min", bad, "exceeds age_max")
    if spec["keys"]:
        duplicated = df.duplicated(list(spec["keys"])).to_numpy()
        if duplicated.any():
            _fail(path, df, ",".join(spec["keys"]), duplicated, "has duplicate keys")
    for column, kind in spec["columns"].items():
        if kind == "count":
            df[column] = df[column].astype(np.int64)
        elif kind == "str":
            df[column] = df[column].astype(object)
    return df


def _nearest(lat_from, lon_from, lat_to, lon_to) -> np.ndarray:
    """Index of the nearest target point for each source point (haversine)."""
    return np.argmin(haversine_km(lat_from[:, None], lon_from[:, None], lat_to[None, :], lon_to[None, :]), axis=1)


def haversine_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Great-circle distance in km between points given in degrees (broadcasting)."""
    lat1, lon1, lat2, lon2 = (np.radians(np.asarray(x, dtype=np.float64)) for x in (lat1, lon1, lat2, lon2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def read_census(data_dir: str | Path, exclude_areas=()) -> CensusTables:
    """Read and validate every table, reconcile their SA2 codes, and record what that took in `notes`.

    The SA2 register is `geography_location` (SA2 2018 codes with centroids). `population_structure` partly
    uses SA2 2023 codes: a code that is not in the register but whose last two digits replaced by 00 is, is a
    2023 split of that 2018 SA2 and is mapped to it. Areas in `exclude_areas` are dropped from every table.
    Any other area code not in the register is an error. SA2s missing from `geography_hierarchy` take the
    region and super_area of the nearest SA2 that has them.
    """
    data_dir = Path(data_dir)
    tables = {name: read_table(data_dir, name) for name in SPECS}
    exclude = np.asarray(list(exclude_areas), dtype=np.int64)
    notes: dict[str, float] = {}
    population = tables["population_structure"]
    notes["people_in_excluded_areas"] = float(population.loc[population["area"].isin(exclude), "value"].sum())
    for name, columns in AREA_COLUMNS.items():
        df = tables[name]
        keep = ~np.logical_or.reduce([df[c].isin(exclude).to_numpy() for c in columns])
        tables[name] = df.loc[keep]

    location = tables["geography_location"]
    register = location["area"].to_numpy()
    for name, columns in AREA_COLUMNS.items():
        df = tables[name]
        for column in columns:
            codes = df[column].to_numpy()
            if name == "population_structure":
                codes = np.where(np.isin(codes, register), codes, codes // 100 * 100)
            unknown = ~np.isin(codes, register)
            if unknown.any():
                _fail(
                    data_dir / f"{name}.parquet",
                    df,
                    column,
                    unknown,
                    "has an SA2 code unknown to geography_location.parquet",
                )

    population = tables["population_structure"]
    original = population["area"].to_numpy()
    mapped = np.where(np.isin(original, register), original, original // 100 * 100)
    notes["sa2_2023_codes_mapped"] = float(np.unique(original[mapped != original]).size)
    notes["people_in_mapped_codes"] = float(population.loc[mapped != original, "value"].sum())
    tables["population_structure"] = (
        population.assign(area=mapped)
        .groupby(["area", "ethnicity", "age", "gender"], as_index=False, sort=True)["value"]
        .sum()
    )

    hierarchy = tables["geography_hierarchy"]
    missing = location.loc[~location["area"].isin(hierarchy["area"])]
    known = location.set_index("area").loc[hierarchy["area"]]
    nearest = _nearest(
        missing["latitude"].to_numpy(),
        missing["longitude"].to_numpy(),
        known["latitude"].to_numpy(),
        known["longitude"].to_numpy(),
    )
    imputed = hierarchy.iloc[nearest].assign(area=missing["area"].to_numpy())
    tables["geography_hierarchy"] = pd.concat([hierarchy, imputed], ignore_index=True).sort_values(
        "area", ignore_index=True
    )
    notes["sa2_hierarchy_imputed"] = float(len(missing))
    notes["people_in_hierarchy_imputed"] = float(
        tables["population_structure"].loc[lambda d: d["area"].isin(missing["area"]), "value"].sum()
    )
    return CensusTables(tables, notes)
