"""Zarr stores with provenance: every output carries config, seed, commit and versions."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import shutil
import subprocess
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from omegaconf import DictConfig, OmegaConf

import diffabm

TRACKED_PACKAGES = ("torch", "numpy", "pandas", "xarray", "zarr", "hydra-core", "snakemake")


def git_commit() -> str:
    """The current git commit of the project (with `-dirty` if the tree has changes)."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape the results."""
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def provenance(config: DictConfig | dict | None, seed: int) -> dict[str, Any]:
    """Attributes every store carries: resolved config, seed, commit, versions, creation time."""
    if isinstance(config, DictConfig):
        config_yaml = OmegaConf.to_yaml(config, resolve=True)
    else:
        config_yaml = OmegaConf.to_yaml(OmegaConf.create(config or {}))
    return {
        "config": config_yaml,
        "seed": int(seed),
        "git_commit": git_commit(),
        "diffabm_version": diffabm.__version__,
        "package_versions": package_versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _zarr_ready(ds: xr.Dataset) -> xr.Dataset:
    """Store string coordinates and variables as object dtype, as zarr 3 expects."""
    ds = ds.copy()
    for name, var in ds.variables.items():
        if var.dtype.kind == "U":
            ds[name] = var.astype(object)
    return ds


def write_dataset(ds: xr.Dataset, path: str | os.PathLike, config: DictConfig | dict | None, seed: int) -> Path:
    """Write `ds` with provenance to a Zarr store atomically (temporary path, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    ds = _zarr_ready(ds)
    ds.attrs.update(provenance(config, seed))
    try:
        ds.to_zarr(tmp, mode="w", consolidated=False)
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def read_dataset(path: str | os.PathLike) -> xr.Dataset:
    """Open a Zarr store written by `write_dataset`, loaded into memory."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"store {path} does not exist")
    with warnings.catch_warnings():
        # Snakemake marks directory outputs with a `.snakemake_timestamp` file that zarr does not know.
        warnings.filterwarnings("ignore", message="Object at .snakemake_timestamp", module="zarr")
        with xr.open_zarr(path, consolidated=False) as ds:
            return ds.load()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file via a temporary file and rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def as_object_strings(values) -> np.ndarray:
    """String labels as an object-dtype array (zarr-3-friendly coordinates)."""
    return np.asarray([str(v) for v in values], dtype=object)
