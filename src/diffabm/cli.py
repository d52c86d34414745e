"""Thin command-line entry points: `diffabm <stage> --study S [paths] [Hydra overrides ...]`.

Every failure is one line on stderr, `diffabm <stage>: error: <what, where, which value>`, and exit
code 2; `DIFFABM_DEBUG=1` prints the traceback as well.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from diffabm.config import compose_study

EXIT_FAILURE = 2


@dataclass(frozen=True)
class Stage:
    """A CLI stage: the function `module:name` called as `function(cfg, *paths)`, one `--<path>` option each in
    signature order; a path ending in `?` is optional (None when not given: e.g. `population?` for a model
    without a population)."""

    function: str
    paths: tuple[str, ...]
    needs_config: bool = True

    def resolve(self) -> Callable:
        module, name = self.function.split(":")
        return getattr(importlib.import_module(module), name)


STAGES = {
    "synthesize": Stage("diffabm.population.synthesize:synthesize", ("population", "report")),
    "simulate": Stage("diffabm.simulation:simulate", ("population?", "output")),
    "plot-simulation": Stage("diffabm.figures.simulation:plot_simulation", ("simulation", "output"),
                             needs_config=False),
    "observe": Stage("diffabm.calibration.observe:observe", ("population?", "output")),
    "calibrate": Stage("diffabm.calibration.stage:calibrate",
                       ("mode", "population?", "observed", "run-dir", "loss-weight?")),
    "loss-weight": Stage("diffabm.calibration.weight:loss_weight_cli",
                         ("population?", "observed", "posterior", "output?")),
    "sensitivity": Stage("diffabm.sensitivity:write_sensitivity", ("population?", "posterior?", "output")),
    "counterfactual": Stage("diffabm.counterfactual:write_scenario", ("scenario", "population?", "posterior", "output")),
    "ad-memory": Stage("diffabm.studies.ad_memory:write_ad_memory", ("output",)),
    "config": Stage("diffabm.cli:print_config", ()),
}


def print_config(cfg) -> None:
    """`diffabm config`: the resolved config of a study as YAML."""
    from omegaconf import OmegaConf

    print(OmegaConf.to_yaml(cfg))


def error_line(err: BaseException) -> str:
    """One line for an error: our own errors (ValueError, missing files) by their message, others by type too."""
    message = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, (ValueError, FileNotFoundError)):
        return message
    return f"{type(err).__name__}: {message}"


def report_failure(stage: str, err: BaseException) -> int:
    """Print the one-line error (and the traceback with DIFFABM_DEBUG=1); the exit code of a failure."""
    if os.environ.get("DIFFABM_DEBUG"):
        traceback.print_exception(err)
    print(f"diffabm {stage}: error: {error_line(err)}", file=sys.stderr)
    return EXIT_FAILURE


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit 2, like every other failure."""

    def error(self, message: str):
        self.exit(EXIT_FAILURE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    """The argument parser: one sub-command per stage of `STAGES`."""
    from diffabm import __version__

    root = OneLineParser(prog="diffabm", description=__doc__)
    root.add_argument("--version", action="version", version=f"diffabm {__version__}")
    sub = root.add_subparsers(dest="stage", required=True, parser_class=OneLineParser)
    for name, stage in STAGES.items():
        command = sub.add_parser(name)
        command.add_argument("--study", default="default")
        for path in stage.paths:
            command.add_argument(f"--{path.rstrip('?')}", required=not path.endswith("?"))
        command.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model.days=30")
    return root


def main(argv: list[str] | None = None) -> int:
    """Run one stage on a composed study config; any failure exits 2 with a one-line message."""
    args = parser().parse_args(argv)
    stage = STAGES[args.stage]
    try:
        cfg = compose_study(args.study, args.overrides)
        paths = [getattr(args, path.rstrip("?").replace("-", "_")) for path in stage.paths]
        stage.resolve()(*([cfg] if stage.needs_config else []), *paths)
    except Exception as err:  # noqa: BLE001 - the CLI's contract: one line and exit 2, whatever failed
        return report_failure(args.stage, err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
