"""Ensembles of point calibrations (Chopra et al. 2023, AAMAS, mode 3; Lakshminarayanan et al.
2017, "deep ensembles"): K independent calibrations from different prior draws and seeds, each
a Snakemake job, merged into one posterior with one draw per member.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr
from omegaconf import DictConfig

from diffabm.calibration.datasets import fit_dataset
from diffabm.calibration.setup import load_target
from diffabm.store import read_dataset, write_dataset


def merge_ensemble(
    cfg: DictConfig,
    member_posteriors: Sequence[str | Path],
    population_path: str | Path | None,
    observed_path: str | Path,
    posterior_path: str | Path,
    fit_path: str | Path,
    metrics_path: str | Path,
) -> Path:
    """Stack the members' point estimates, one chain each (ArviZ's R-hat then compares the members); write
    posterior, fit and metrics."""
    members = [read_dataset(path) for path in member_posteriors]
    posterior = xr.concat([ds.drop_attrs() for ds in members], dim="chain")
    posterior = posterior.assign_coords(chain=np.arange(len(members)))
    posterior.attrs.update(
        mode="ensemble",
        kind=f"spread of {len(members)} point fits (not a posterior)",
        **{key: members[0].attrs[key] for key in ("truth",) if key in members[0].attrs},
    )
    target, _, observed = load_target(cfg, population_path, observed_path)
    flat = {name: torch.as_tensor(posterior[name].values.reshape(-1)) for name in target.names}
    theta = target.unconstrained(flat)
    write_dataset(
        fit_dataset(target, theta, cfg.calibration.fit_draws, int(cfg.seed), observed), fit_path, cfg, cfg.seed
    )
    metrics = [
        pd.read_csv(Path(path).parent / "metrics.csv").assign(member=k) for k, path in enumerate(member_posteriors)
    ]
    pd.concat(metrics, ignore_index=True).to_csv(metrics_path, index=False)
    return write_dataset(posterior, posterior_path, cfg, cfg.seed)
