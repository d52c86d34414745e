"""Compose a study's Hydra config (conf/) for stages, scripts and tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"


class ConfigError(ValueError):
    """A study or override that does not compose."""


def compose_study(study: str = "default", overrides: Sequence[str] = (), config_dir: Path = CONFIG_DIR
                  ) -> DictConfig:
    """The resolved config of `study` with Hydra `overrides` (e.g. `model.days=30`)."""
    if not (config_dir / "experiment" / f"{study}.yaml").exists():
        known = sorted(p.stem for p in (config_dir / "experiment").glob("*.yaml"))
        raise ConfigError(f"unknown study {study!r}: no {config_dir}/experiment/{study}.yaml (known: {known})")
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = compose(config_name="config", overrides=[f"experiment={study}", *overrides])
    except HydraException as err:
        raise ConfigError(f"study {study!r}: {err}") from err
    OmegaConf.resolve(cfg)
    OmegaConf.set_readonly(cfg, True)
    return cfg
