"""Figures of the studies (matplotlib, Agg backend), saved with the provenance of the store they show."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import xarray as xr

PROVENANCE = ("config", "seed", "git_commit", "diffabm_version")


def provenance_of(ds: xr.Dataset, **extra: str) -> dict[str, str]:
    """The store's provenance attributes (config, seed, commit, version) as PNG metadata, plus `extra`."""
    return {**{key: str(ds.attrs.get(key, "")) for key in PROVENANCE}, **extra}


def save_figure(fig, path: str | Path, provenance: Mapping[str, str], suffixes: Sequence[str] = (".png",),
                dpi: int = 120) -> Path:
    """Save `fig` atomically (a temporary file, then rename) once per suffix, the PNG with `provenance` in its
    metadata; close it. Returns `path`."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in suffixes:
        target = path.with_suffix(suffix)
        tmp = target.with_name(f".{target.stem}.tmp{suffix}")
        fig.savefig(tmp, dpi=dpi, metadata=dict(provenance) if suffix == ".png" else None)
        tmp.replace(target)
    plt.close(fig)
    return path
