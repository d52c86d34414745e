"""Stage `synthesize`: build the study's population (census-based or toy) and its report."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from diffabm.population.schema import Population
from diffabm.population.toy import toy_population
from diffabm.store import atomic_write_text, write_dataset

log = logging.getLogger(__name__)


def group_size_table(population: Population) -> pd.DataFrame:
    """Number of groups of each size, per layer."""
    rows = []
    for layer, ids in population.groups.items():
        ids = ids[ids >= 0]
        sizes, counts = np.unique(np.bincount(ids)[np.unique(ids)], return_counts=True)
        rows += [{"layer": layer, "size": int(s), "groups": int(c)} for s, c in zip(sizes, counts)]
    return pd.DataFrame(rows, columns=["layer", "size", "groups"])


def synthesize(cfg: DictConfig, output_path: str | Path, report_dir: str | Path) -> Path:
    """Synthesise `cfg.population` (kind `census` or `toy`); write `population.zarr` and a report."""
    settings = OmegaConf.to_container(cfg.population)
    kind = settings.pop("kind", None)
    report_dir = Path(report_dir)
    if kind == "census":
        from diffabm.population.census import synthesize_census
        from diffabm.population.report import write_fit_report

        synthesis = synthesize_census(cfg.population, seed=cfg.seed)
        population = synthesis.population
        write_fit_report(synthesis, report_dir)
    elif kind == "toy":
        population = toy_population(**settings, seed=cfg.seed)
        report_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(report_dir / "group_sizes.csv", group_size_table(population).to_csv(index=False))
    else:
        raise ValueError(f"population.kind is {kind!r}; expected 'census' or 'toy'")
    log.info("synthesised %d agents (%s population) in layers %s", population.n_agents, kind, population.layers)
    return write_dataset(population.to_dataset(), output_path, cfg, cfg.seed)
