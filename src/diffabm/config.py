"""Compose a study's Hydra config (conf/) for stages, scripts and tests, validated against its JSON schema."""

from __future__ import annotations

import functools
import math
import re
import reprlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir, initialize_config_module
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

CONFIG_MODULE = "diffabm.conf"  # the package's configs, pkg://diffabm.conf (in a checkout, a link to conf/)
CONFIG_DIR = Path(__file__).resolve().parent / "conf"
SCHEMA_PATH = CONFIG_DIR / "config.schema.yaml"  # workflow/schemas/config.schema.yaml links to it


class ConfigError(ValueError):
    """A study or override that does not compose, or a composed config that breaks the schema."""


def compose_study(study: str = "default", overrides: Sequence[str] = (), config_dir: Path = CONFIG_DIR) -> DictConfig:
    """The resolved, validated config of `study` with Hydra `overrides` (e.g. `model.days=30`)."""
    if not (config_dir / "experiment" / f"{study}.yaml").exists():
        known = sorted(p.stem for p in (config_dir / "experiment").glob("*.yaml"))
        raise ConfigError(f"unknown study {study!r}: no {config_dir}/experiment/{study}.yaml (known: {known})")
    try:
        configs = (
            initialize_config_module(CONFIG_MODULE, version_base="1.3")
            if config_dir == CONFIG_DIR
            else initialize_config_dir(config_dir=str(config_dir), version_base="1.3")
        )
        with configs:
            cfg = compose(config_name="config", overrides=[f"experiment={study}", *overrides])
    except HydraException as err:
        raise ConfigError(f"study {study!r}: {err}") from err
    OmegaConf.resolve(cfg)
    validate_config(OmegaConf.to_container(cfg, resolve=True), f"study {study!r}")
    OmegaConf.set_readonly(cfg, True)
    return cfg


def validate_config(container: dict, where: str) -> None:
    """Raise a one-line ConfigError naming `where`, the dotted field and its value if `container` (a resolved
    study config) has a non-finite float or breaks workflow/schemas/config.schema.yaml."""
    for path, value in _non_finite(container, ()):
        raise ConfigError(f"{where}: config field {_field(path)!r}: {value!r} is not a finite number")
    errors = list(_validator().iter_errors(container))
    if errors:
        from jsonschema.exceptions import best_match

        best = best_match(errors)
        others = len({tuple(error.absolute_path) for error in errors} - {tuple(best.absolute_path)})
        more = f" (and errors in {others} more config fields)" if others else ""
        message = f"{where}: {_describe(best)}{more}"
        raise ConfigError(message.replace("\n", " "))  # one line


@functools.cache
def _validator():
    """One validator of the schema for the process: draft 2020-12 with date formats checked and `integer`
    meaning a Python int (JSON Schema would take 1.0; a bool is never one). tests/test_config_schema.py checks
    the schema against the draft's meta-schema (too slow to repeat in every process)."""
    import yaml
    from jsonschema import Draft202012Validator, validators

    schema = yaml.load(SCHEMA_PATH.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    strict_integer = Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool)
    )
    validator = validators.extend(Draft202012Validator, type_checker=strict_integer)
    return validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlist, _short.maxdict, _short.maxlevel = 80, 80, 8, 4, 2


def _non_finite(value: Any, path: tuple) -> Iterator[tuple[tuple, float]]:
    if isinstance(value, float):
        if not math.isfinite(value):
            yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _non_finite(item, (*path, key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _non_finite(item, (*path, index))


def _field(path: Sequence) -> str:
    """Dotted field path with list items as [i]: `interventions[0].multiplier`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "<root>"


def _describe(error) -> str:
    """The message of one jsonschema error, rephrased around the config field it concerns."""
    path = list(error.absolute_path)
    if "propertyNames" in error.absolute_schema_path:  # a map key of the wrong form (instance: the key)
        return f"config field {_field([*path, error.instance])!r} is not allowed: the name {error.message}"
    unexpected = error.validator == "additionalProperties" and error.validator_value is False
    if unexpected and isinstance(error.instance, dict):
        known = list(error.schema.get("properties", {}))
        patterns = list(error.schema.get("patternProperties", {}))
        extra = [
            key
            for key in error.instance
            if key not in known and not any(re.search(pattern, key) for pattern in patterns)
        ]
        if not extra:
            return f"config field {_field(path)!r}: {error.message}"
        allowed = ", ".join(known + [f"names matching {pattern}" for pattern in patterns])
        also = f"; nor are {', '.join(map(repr, extra[1:]))}" if len(extra) > 1 else ""
        return (
            f"config field {_field([*path, extra[0]])!r} is not allowed (value "
            f"{_short.repr(error.instance[extra[0]])}{also}; allowed fields: {allowed})"
        )
    if error.validator == "required":
        missing = [key for key in error.validator_value if key not in error.instance]
        return f"config field {_field([*path, missing[0]])!r} is required but missing"
    value = _short.repr(error.instance)
    shown = "" if value in error.message else f" (value {value})"
    return f"config field {_field(path)!r}: {error.message}{shown}"
