"""The Snakemake side of a stage: every `workflow/scripts/*.py` is one `run_job` call.

The job's log file (`results/<study>/logs/<rule>.log`, the rule's `log:`) receives everything the
stage prints: its log lines, warnings, Lightning's messages and, on failure, the one-line error
(with the traceback under DIFFABM_DEBUG=1), which also goes to the console; the job exits 2.
Torch uses the job's `threads`. The job composes the study's config with the run's overrides (`job_overrides`).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from diffabm.cli import error_line, report_failure
from diffabm.config import compose_study

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def redirect_output(log_path: Path) -> int:
    """Send this process's stdout and stderr (file descriptors 1 and 2) to `log_path`; return a copy of stderr."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    console = os.dup(2)
    with open(log_path, "w") as log_file:
        os.dup2(log_file.fileno(), 1)
        os.dup2(log_file.fileno(), 2)
    return console


def run_job(snakemake: Any, stage: Callable[[DictConfig], object]) -> None:
    """Compose the job's study config, run `stage(cfg)` with the log set up; exit 2 with one line on failure."""
    import torch

    console = redirect_output(Path(snakemake.log[0]))
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format=LOG_FORMAT, force=True)
    logging.captureWarnings(True)
    torch.set_num_threads(max(int(snakemake.threads), 1))
    rule = snakemake.rule
    logging.getLogger(__name__).info(
        "rule %s (%s), %d threads", rule, dict(snakemake.wildcards.items()), snakemake.threads
    )
    try:
        stage(compose_study(snakemake.wildcards.study, job_overrides(snakemake)))
    except Exception as err:
        code = report_failure(rule, err)
        sys.stderr.flush()
        with os.fdopen(console, "w") as stderr:
            print(f"diffabm {rule}: error: {error_line(err)} (log: {snakemake.log[0]})", file=stderr)
        sys.exit(code)
    logging.getLogger(__name__).info("rule %s done", rule)


def job_overrides(snakemake: Any) -> list[str]:
    """The job's Hydra overrides: the run's (`--config overrides=[...]`, read from the workflow's config, not a param:
    a job reruns only when the config it reads changes, its `params.config_hash`), then a flow variant's
    (`params.variant`)."""
    return [*snakemake.config.get("overrides", []), *snakemake.params.get("variant", [])]


def workflow_config(config: dict) -> tuple[str, list[str]]:
    """The Snakefile's `--config` (study, overrides), checked and composed once: a bad value is one line on
    stderr and exit 2 before any rule runs."""
    try:
        unknown = sorted(set(config) - {"study", "overrides"})
        if unknown:
            raise ValueError(f"--config {unknown[0]}={config[unknown[0]]!r} is not a setting; known: study, overrides")
        study, overrides = config.get("study", "default"), config.get("overrides", [])
        if not isinstance(study, str):
            raise ValueError(f"--config study={study!r} must be a study name (conf/experiment/<study>.yaml)")
        if not isinstance(overrides, list) or not all(isinstance(item, str) for item in overrides):
            raise ValueError(
                f"--config overrides={overrides!r} must be a list of Hydra overrides, e.g. "
                f"'overrides=[\"model.days=30\"]'"
            )
        cfg = compose_study(study, overrides)
        variants = dict(cfg.get("calibration", {}).get("variants") or {})
        for variant in variants.values():  # each flow variant composes too, before any job runs
            compose_study(study, [*overrides, *variant])
        unknown = [name for name in (cfg.get("gradient_study") or {}).get("estimators", []) if name not in variants]
        if unknown:
            raise ValueError(
                f"study {study!r}: gradient_study.estimators {unknown} are not calibration.variants {sorted(variants)}"
            )
        return study, overrides
    except ValueError as err:
        sys.exit(report_failure("workflow", err))


def optional_input(snakemake: Any, name: str) -> str | None:
    """A named input that an input function may leave empty (e.g. `population` of a model without one)."""
    value = snakemake.input.get(name)
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    return str(value) if value else None
