"""Zarr stores with provenance: every output carries config, seed, commit and versions."""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import json
import logging
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

log = logging.getLogger(__name__)
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
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def content_digest(path: str | os.PathLike) -> str:
    """sha256 of a file, or of every file under a folder (relative names and bytes), without Snakemake's marker."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if file.name == ".snakemake_timestamp":
            continue
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def source_digest() -> str:
    """sha256 of the diffabm package's source files: what a git commit misses in a dirty tree or outside git."""
    root = Path(diffabm.__file__).resolve().parent
    digest = hashlib.sha256()
    for file in sorted(root.rglob("*.py")):
        digest.update(str(file.relative_to(root)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


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
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def _zarr_ready(ds: xr.Dataset) -> xr.Dataset:
    """Store string coordinates and variables as object dtype, as zarr 3 expects."""
    ds = ds.copy()
    for name, var in ds.variables.items():
        if var.dtype.kind == "U":
            ds[name] = var.astype(object)
    return ds


class StoreError(ValueError):
    """A store that cannot be trusted: missing, unreadable, or an array that does not match its checksum."""


def array_checksum(values: np.ndarray) -> str:
    """sha256 of an array's decoded values (dtype, shape and data): what a reader must get back."""
    values = np.asarray(values)
    if values.dtype.kind in "OUST":  # strings come back as object or as a string dtype
        digest = hashlib.sha256(f"str{values.shape}".encode())
        digest.update("\x1f".join(str(v) for v in values.ravel()).encode())
        return digest.hexdigest()
    digest = hashlib.sha256(f"{values.dtype.kind}{values.dtype.itemsize}{values.shape}".encode())
    if values.dtype.kind == "M":
        digest.update(np.ascontiguousarray(values.astype("datetime64[ns]").view(np.int64)).tobytes())
    else:
        digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()


def checksums(ds: xr.Dataset) -> dict[str, str]:
    """Checksums of every variable and coordinate of `ds`, by name."""
    return {str(name): array_checksum(var.values) for name, var in ds.variables.items()}


def remove_stale_temporaries(path: Path) -> None:
    """Remove `.<name>.<uuid>.tmp` leftovers of interrupted writes of `path`."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


def write_dataset(ds: xr.Dataset, path: str | os.PathLike, config: DictConfig | dict | None, seed: int) -> Path:
    """Write `ds` with provenance and per-array checksums to a Zarr store atomically (temporary path, then
    rename); leftovers of earlier interrupted writes of the same store are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    ds = _zarr_ready(ds)
    ds.attrs.update(provenance(config, seed))
    ds.attrs["checksums"] = checksums(ds)
    try:
        with warnings.catch_warnings():
            # Consolidated metadata (an extension of Zarr format 3) lets a plain `xarray.open_zarr` read the store
            # without listing its folder, where Snakemake's `.snakemake_timestamp` marker would raise a warning.
            warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part", module="zarr")
            ds.to_zarr(tmp, mode="w", consolidated=True)
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote %s (%s)", path, ", ".join(f"{name} {dict(var.sizes)}" for name, var in ds.data_vars.items()))
    return path


def read_dataset(path: str | os.PathLike) -> xr.Dataset:
    """Open a Zarr store written by `write_dataset`, loaded into memory, with every array checked against
    the checksum recorded at write time (a missing chunk would otherwise read as the fill value)."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"store {path} does not exist")
    with warnings.catch_warnings():
        # Snakemake marks directory outputs with a `.snakemake_timestamp` file that zarr does not know; an array
        # folder without metadata is not recognised either, and the checksums below name it as missing.
        warnings.filterwarnings("ignore", message="Object at .* is not recognized", module="zarr")
        try:
            ds = xr.open_zarr(path, consolidated=False)
        except Exception as err:
            raise StoreError(f"store {path}: cannot be opened ({unreadable_metadata(path) or one_line(err)})") from err
        with ds:
            recorded = ds.attrs.get("checksums")
            if not isinstance(recorded, dict):
                raise StoreError(
                    f"store {path}: no checksums in its attributes (written by an older diffabm?); "
                    f"delete it and rerun the stage that writes it"
                )
            for name in sorted(set(recorded) - set(map(str, ds.variables))):
                raise StoreError(f"store {path}: array '{name}' is missing")
            for name, variable in ds.variables.items():
                try:
                    variable.load()  # in place: the dataset's own variable
                except Exception as err:
                    raise StoreError(f"store {path}: array '{name}' cannot be read ({one_line(err)})") from err
                if recorded.get(str(name)) != array_checksum(variable.values):
                    problem = (
                        "is not in its checksums"
                        if str(name) not in recorded
                        else "does not match its checksum (a chunk is missing or corrupt)"
                    )
                    raise StoreError(f"store {path}: array '{name}' {problem}")
    return ds


def unreadable_metadata(path: Path) -> str | None:
    """Which metadata file of a store is not valid JSON, if any (root or an array's), as a phrase."""
    for metadata in [path / "zarr.json", *sorted(path.glob("*/zarr.json"))]:
        try:
            json.loads(metadata.read_text())
        except (OSError, ValueError):
            where = "the root" if metadata.parent == path else f"array '{metadata.parent.name}'"
            return f"metadata of {where} is missing or not valid JSON"
    return None


def one_line(err: BaseException) -> str:
    """An exception as one line: its type and its message's first line."""
    message = str(err).strip().splitlines()
    return f"{type(err).__name__}: {message[0]}" if message else type(err).__name__


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file via a temporary file and rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    log.info("wrote %s", path)
    return path


def as_object_strings(values) -> np.ndarray:
    """String labels as an object-dtype array (zarr-3-friendly coordinates)."""
    return np.asarray([str(v) for v in values], dtype=object)
