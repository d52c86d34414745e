"""The population contract: agents with attributes and one group id per contact layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

SEX_LABELS = ("female", "male")
ETHNICITY_LABELS = ("European", "Maori", "Pacific", "Asian", "MELAA")
ATTRIBUTES = ("age", "sex", "ethnicity", "area")


@dataclass
class Population:
    """Agents as arrays: attributes of length N and, per layer, group ids (N,) or (N, K); -1 = none."""

    age: np.ndarray
    sex: np.ndarray
    ethnicity: np.ndarray
    area: np.ndarray
    groups: dict[str, np.ndarray]
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    sex_labels: tuple[str, ...] = SEX_LABELS
    ethnicity_labels: tuple[str, ...] = ETHNICITY_LABELS
    attrs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def n_agents(self) -> int:
        return int(self.age.shape[0])

    @property
    def layers(self) -> list[str]:
        return list(self.groups)

    def validate(self, source: str = "population") -> None:
        """Check shapes, ranges and group ids; raise ValueError naming the field and a bad value."""
        n = self.age.shape[0]
        for name in ATTRIBUTES:
            values = np.asarray(getattr(self, name))
            if values.ndim != 1 or values.shape[0] != n:
                raise ValueError(f"{source}: field '{name}' has shape {values.shape}, expected ({n},)")
        if n and (self.age.min() < 0 or self.age.max() > 120):
            bad = self.age[(self.age < 0) | (self.age > 120)][0]
            raise ValueError(f"{source}: field 'age' has value {bad} outside 0..120")
        for name, labels in (("sex", self.sex_labels), ("ethnicity", self.ethnicity_labels)):
            codes = np.asarray(getattr(self, name))
            bad = codes[(codes < 0) | (codes >= len(labels))]
            if bad.size:
                raise ValueError(f"{source}: field '{name}' has code {bad[0]} outside 0..{len(labels) - 1}")
        for name, values in self.extra.items():
            if np.asarray(values).shape[:1] != (n,):
                raise ValueError(f"{source}: extra field '{name}' has shape {np.shape(values)}, expected ({n}, ...)")
        if not self.groups:
            raise ValueError(f"{source}: no contact layers")
        for layer, ids in self.groups.items():
            if ids.ndim not in (1, 2) or ids.shape[0] != n:
                raise ValueError(f"{source}: layer '{layer}' has shape {ids.shape}, expected ({n},) or ({n}, K)")
            if not np.issubdtype(ids.dtype, np.integer):
                raise ValueError(f"{source}: layer '{layer}' has dtype {ids.dtype}, expected integer group ids")
            if ids.size and ids.min() < -1:
                raise ValueError(f"{source}: layer '{layer}' has group id {ids.min()} (only -1 means none)")

    def to_dataset(self) -> xr.Dataset:
        """The population as the `population.zarr` dataset (dimension `agent`)."""
        data_vars = {name: ("agent", np.asarray(getattr(self, name))) for name in ATTRIBUTES}
        for layer, ids in self.groups.items():
            dims = ("agent",) if ids.ndim == 1 else ("agent", f"{layer}_membership")
            data_vars[layer] = (dims, ids.astype(np.int64))
        for name, values in self.extra.items():
            values = np.asarray(values)
            data_vars[name] = (("agent", *tuple(f"{name}_dim{i}" for i in range(1, values.ndim))), values)
        ds = xr.Dataset(data_vars)
        ds["age"].attrs["units"] = "years"
        ds["area"].attrs["description"] = "SA2 2018 code of the home area"
        for layer in self.groups:
            ds[layer].attrs["description"] = f"{layer} group id (-1 = none)"
        ds.attrs.update(self.attrs)
        ds.attrs["layers"] = list(self.groups)
        ds.attrs["extra"] = list(self.extra)
        ds.attrs["sex_labels"] = list(self.sex_labels)
        ds.attrs["ethnicity_labels"] = list(self.ethnicity_labels)
        return ds

    @classmethod
    def from_dataset(cls, ds: xr.Dataset, source: str = "population") -> Population:
        """Read a population from its dataset, validating it."""
        missing = [name for name in (*ATTRIBUTES,) if name not in ds]
        if missing or "layers" not in ds.attrs:
            raise ValueError(f"{source}: missing fields {missing or ['attrs.layers']}")
        layers = list(ds.attrs["layers"])
        absent = [layer for layer in layers if layer not in ds]
        if absent:
            raise ValueError(f"{source}: layers {absent} listed in attrs but not stored")
        extra = {k: v for k, v in ds.attrs.items() if k not in ("layers", "extra", "sex_labels", "ethnicity_labels")}
        population = cls(
            age=ds["age"].values.astype(np.int64),
            sex=ds["sex"].values.astype(np.int64),
            ethnicity=ds["ethnicity"].values.astype(np.int64),
            area=ds["area"].values.astype(np.int64),
            groups={layer: ds[layer].values.astype(np.int64) for layer in layers},
            extra={name: ds[name].values for name in ds.attrs.get("extra", [])},
            sex_labels=tuple(ds.attrs.get("sex_labels", SEX_LABELS)),
            ethnicity_labels=tuple(ds.attrs.get("ethnicity_labels", ETHNICITY_LABELS)),
            attrs={},
        )
        population.attrs = extra
        return population


def read_population(path: str | Path) -> Population:
    """Load `population.zarr`."""
    from diffabm.store import read_dataset

    return Population.from_dataset(read_dataset(path), source=str(path))
