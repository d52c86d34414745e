"""Recovery of known parameters: posterior summaries against the truth, per calibration mode.

For synthetic studies (papers.md §5): is each true value inside the 90% posterior interval,
how far is the posterior mean, and how does the fitted loss compare with the truth's loss
under the same simulator noise.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from diffabm.calibration.datasets import read_posterior
from diffabm.store import atomic_write_text, read_dataset

COLUMNS = [
    "mode",
    "parameter",
    "truth",
    "mean",
    "q05",
    "q95",
    "inside_90",
    "relative_error",
    "loss",
    "truth_loss",
    "loss_ratio",
]


def recovery_table(runs: Mapping[str, tuple[str | Path, str | Path]]) -> pd.DataFrame:
    """One row per (mode, calibrated parameter) from each mode's (posterior.zarr, fit.zarr)."""
    rows = []
    for mode, (posterior_path, fit_path) in runs.items():
        posterior, fit = read_posterior(posterior_path), read_dataset(fit_path)
        truth = dict(posterior.attrs.get("truth") or {})
        loss = float(np.median(fit["loss"].values)) if "loss" in fit else np.nan
        truth_loss = float(np.median(fit["truth_loss"].values)) if "truth_loss" in fit else np.nan
        for name in (name for name in posterior.data_vars if posterior[name].dims == ("draw",)):
            draws = posterior[name].values.astype(float)
            true = float(truth[name]) if name in truth else np.nan
            low, high = np.quantile(draws, [0.05, 0.95])
            rows.append(
                {
                    "mode": mode,
                    "parameter": name,
                    "truth": true,
                    "mean": draws.mean(),
                    "q05": low,
                    "q95": high,
                    "inside_90": bool(low <= true <= high) if np.isfinite(true) else None,
                    "relative_error": abs(draws.mean() - true) / abs(true) if np.isfinite(true) and true else np.nan,
                    "loss": loss,
                    "truth_loss": truth_loss,
                    "loss_ratio": loss / truth_loss if truth_loss else np.nan,
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def write_recovery_table(runs: Mapping[str, tuple[str | Path, str | Path]], output_path: str | Path) -> Path:
    """Write the recovery table as CSV (atomically)."""
    return atomic_write_text(output_path, recovery_table(runs).to_csv(index=False, float_format="%.6g"))
