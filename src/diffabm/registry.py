"""What config may build: `_target_` only from an allow-list, so no file or override can run other code.

`hydra.utils.instantiate` imports and calls any dotted path (`builtins.open` truncates a file), and a
prefix test is no guard (`diffabm.store.shutil.rmtree` resolves through a module's imports). So every
`_target_` in a config tree must be one of `ALLOWED_TARGETS` (the project's models and estimators, the
Lightning Trainer and loggers).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

ALLOWED_TARGETS = frozenset(
    {
        "diffabm.models.epidemic.EpidemicModel",
        "diffabm.models.brock_hommes.BrockHommes",
        "lightning.pytorch.Trainer",
        "lightning.pytorch.loggers.CSVLogger",
        "lightning.pytorch.loggers.WandbLogger",
        "diffabm.calibration.point.PointCalibration",
        "diffabm.calibration.calibnn.CalibNNCalibration",
        "diffabm.calibration.flow.FlowCalibration",
        "diffabm.stochastic.EventWeighted",
        "diffabm.stochastic.StraightThrough",
        "diffabm.stochastic.StraightThroughGumbel",
        "diffabm.stochastic.GumbelSoftmax",
    }
)


class TargetNotAllowed(ValueError):
    """A `_target_` outside the allow-list."""


def targets(config: Any, path: str = "") -> Iterator[tuple[str, object]]:
    """(dotted path, value) of every `_target_` in a config tree."""
    if isinstance(config, (dict, DictConfig)):
        for key, value in config.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "_target_":
                yield where, value
            else:
                yield from targets(value, where)
    elif isinstance(config, (list, tuple, ListConfig)):
        for index, value in enumerate(config):
            yield from targets(value, f"{path}[{index}]")


def check_targets(config: Any, where: str = "config") -> None:
    """Raise TargetNotAllowed naming the field and value of the first `_target_` outside the allow-list."""
    for path, target in targets(config):
        if target not in ALLOWED_TARGETS:
            raise TargetNotAllowed(
                f"{where} field '{path}' is {target!r}: not an allowed _target_ (allowed: {sorted(ALLOWED_TARGETS)})"
            )


def instantiate(config: DictConfig | dict, where: str = "config", **kwargs: Any) -> Any:
    """`hydra.utils.instantiate` after `check_targets`."""
    from hydra.utils import instantiate as hydra_instantiate

    check_targets(OmegaConf.to_container(config) if isinstance(config, DictConfig) else config, where)
    return hydra_instantiate(config, **kwargs)
