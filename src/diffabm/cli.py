"""Thin command-line entry points: `diffabm <stage> --study S [paths] [Hydra overrides ...]`.

One table, `STAGES`, names every stage the Snakemake workflow runs: the stage function each rule's script
calls, its paths as options and a line of help. Every failure is one line on stderr,
`diffabm <stage>: error: <what, where, which value>`, and exit code 2; `DIFFABM_DEBUG=1` prints the
traceback as well. Stage modules are imported only when their stage runs (Lightning alone takes seconds).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXIT_FAILURE = 2


@dataclass(frozen=True)
class Stage:
    """A CLI stage: the function `module:name`, called as `function(cfg, *paths, **options)` (without `cfg`
    when `needs_config` is false), one `--<path>` option each in signature order. A path ending in `?` is
    optional (None when not given: e.g. `population?` for a model without a population); in `+`, a list (the
    option repeated); in `=`, a mapping (the option repeated as NAME=PATH). `options` are further keyword
    arguments, as argparse settings (e.g. a flag). `wraps` names the stage function of the workflow's script
    when `function` is a command-line adapter of it."""

    function: str
    paths: tuple[str, ...]
    help: str
    needs_config: bool = True
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    wraps: str | None = None

    def resolve(self) -> Callable:
        module, name = self.function.split(":")
        return getattr(importlib.import_module(module), name)

    @property
    def stage_function(self) -> str:
        """The stage function (`module:name`) this entry runs, as the workflow's scripts call it."""
        return self.wraps or self.function


POPULATION = "population?"
STAGES: dict[str, Stage] = {
    "config": Stage("diffabm.cli:print_config", (), "print the study's resolved config as YAML"),
    "synthesize": Stage(
        "diffabm.population.synthesize:synthesize",
        ("population", "report"),
        "synthesise the study's population (population.zarr) and its fit report",
    ),
    "simulate": Stage(
        "diffabm.simulation:simulate",
        (POPULATION, "output"),
        "simulate the study's model at its parameters (simulation.zarr)",
    ),
    "plot-simulation": Stage(
        "diffabm.figures.simulation:plot_simulation",
        ("simulation", "output"),
        "plot a simulation.zarr (PNG)",
        needs_config=False,
    ),
    "observe": Stage(
        "diffabm.calibration.observe:observe",
        (POPULATION, "output"),
        "synthetic observations at the study's truth (observed.zarr)",
    ),
    "calibrate": Stage(
        "diffabm.calibration.stage:calibrate",
        ("mode", POPULATION, "observed", "run-dir", "loss-weight?"),
        "calibrate one mode (posterior.zarr, fit.zarr, metrics.csv in the run directory)",
        options={
            "member": {"type": int, "help": "ensemble member k (with --mode ensemble)"},
            "resume": {
                "action": "store_true",
                "help": "continue from the run's checkpoints/last.ckpt if it is of the "
                "same run (config, seed, inputs); otherwise start afresh",
            },
        },
    ),
    "loss-weight": Stage(
        "diffabm.calibration.weight:loss_weight_cli",
        (POPULATION, "observed", "posterior", "output?"),
        "the flow's loss weight from a point fit (JSON; printed without --output)",
        wraps="diffabm.calibration.weight:write_loss_weight",
    ),
    "merge-ensemble": Stage(
        "diffabm.calibration.ensemble:merge_ensemble",
        ("member+", POPULATION, "observed", "posterior", "fit", "metrics"),
        "merge the ensemble members' posteriors (--member once per member's posterior.zarr)",
    ),
    "plot-calibration": Stage(
        "diffabm.figures.calibration:plot_calibration",
        ("posterior", "fit", "metrics", "output"),
        "plot one calibration run (PNG)",
    ),
    "recovery-table": Stage(
        "diffabm.cli:recovery_table",
        ("run=", "output"),
        "truth vs posterior per run (CSV); --run MODE=RUN_DIR once per run",
        needs_config=False,
        wraps="diffabm.calibration.summary:write_recovery_table",
    ),
    "forecast-scores": Stage(
        "diffabm.calibration.forecast:write_forecast_scores",
        ("fit", "output"),
        "weekly forecast scores of a run's fit.zarr (CSV)",
    ),
    "sensitivity": Stage(
        "diffabm.sensitivity:write_sensitivity",
        (POPULATION, "posterior?", "output"),
        "one-shot sensitivity analysis (sensitivity.zarr)",
    ),
    "plot-sensitivity": Stage(
        "diffabm.figures.sensitivity:plot_sensitivity",
        ("sensitivity", "output"),
        "plot a sensitivity.zarr (PNG)",
        needs_config=False,
    ),
    "counterfactual": Stage(
        "diffabm.counterfactual:write_scenario",
        ("scenario", POPULATION, "posterior", "output"),
        "one counterfactual scenario at posterior draws (store)",
    ),
    "merge-counterfactuals": Stage(
        "diffabm.counterfactual:merge_counterfactuals",
        ("scenario-store+", "output", "table"),
        "stack the scenario stores (counterfactuals.zarr) and their summary (CSV)",
    ),
    "plot-counterfactuals": Stage(
        "diffabm.figures.counterfactual:plot_counterfactuals",
        ("store", "output", "observed?"),
        "plot counterfactuals.zarr (PNG)",
        needs_config=False,
    ),
    "gradient-study": Stage(
        "diffabm.studies.gradient_horizon:write_gradient_study",
        ("observed", "output"),
        "gradient estimates of the gradient-horizon study (gradient_study.zarr)",
    ),
    "gradient-horizon-report": Stage(
        "diffabm.figures.gradient_horizon:gradient_horizon_report",
        ("gradient-study", "posterior=", "metrics=", "figures-dir", "table"),
        "figures and table of the gradient-horizon study; --posterior and "
        "--metrics as ESTIMATOR=PATH, once per estimator",
    ),
    "sbc-ranks": Stage(
        "diffabm.studies.sbc:write_sbc",
        (POPULATION, "observed+", "posterior+", "output", "ranks", "summary"),
        "simulation-based calibration ranks (sbc.zarr, ranks and summary CSV); --observed and "
        "--posterior once per data set, in the same order",
    ),
    "plot-sbc": Stage("diffabm.figures.sbc:plot_sbc", ("sbc", "output"), "plot an sbc.zarr (PNG)", needs_config=False),
    "ad-memory": Stage(
        "diffabm.studies.ad_memory:write_ad_memory",
        ("output",),
        "memory and time of one gradient per AD mode (ad_memory.zarr)",
    ),
    "plot-ad-memory": Stage(
        "diffabm.figures.ad_memory:plot_ad_memory",
        ("ad-memory", "output"),
        "plot an ad_memory.zarr (PNG)",
        needs_config=False,
    ),
    "private-demo": Stage(
        "diffabm.studies.private_demo:write_private_demo",
        ("population", "observed", "output", "table"),
        "private (secret-shared) vs plain simulation, gradient and point fit (private_demo.zarr, CSV)",
    ),
    "plot-private-demo": Stage(
        "diffabm.figures.private_demo:plot_private_demo",
        ("private-demo", "output"),
        "plot a private_demo.zarr (PNG)",
        needs_config=False,
    ),
    "resolved-config": Stage(
        "diffabm.report:write_config",
        ("output", "html?"),
        "write the study's resolved config with its provenance (YAML; the report's config)",
    ),
    "benchmark-table": Stage(
        "diffabm.report:write_benchmark_table",
        ("benchmarks-dir", "output", "html"),
        "gather a study's job benchmarks (benchmarks/*.tsv) into one CSV and an HTML page",
        needs_config=False,
    ),
    "html-table": Stage(
        "diffabm.report:write_html_table", ("table", "output"), "a CSV table as an HTML page", needs_config=False
    ),
}


def print_config(cfg) -> None:
    """`diffabm config`: the resolved config of a study as YAML."""
    from omegaconf import OmegaConf

    print(OmegaConf.to_yaml(cfg))


def recovery_table(runs: Mapping[str, str], output_path: str | Path) -> Path:
    """`diffabm recovery-table`: the recovery table of calibration runs given as mode: run directory (each
    holding posterior.zarr and fit.zarr)."""
    from diffabm.calibration.summary import write_recovery_table

    return write_recovery_table(
        {mode: (Path(run) / "posterior.zarr", Path(run) / "fit.zarr") for mode, run in runs.items()}, output_path
    )


def package_version() -> str:
    """The installed package's version (importlib.metadata), or the source's where it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("diffabm")
    except PackageNotFoundError:
        from diffabm import __version__

        return __version__


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


def mapping(option: str, pairs: list[str]) -> dict[str, str]:
    """NAME=PATH pairs of a repeated option as a mapping; a pair without `=` or a repeated name is an error."""
    result: dict[str, str] = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--{option} {pair!r} is not NAME=PATH")
        if name in result:
            raise ValueError(f"--{option}: {name!r} given twice")
        result[name] = path
    return result


def parser() -> argparse.ArgumentParser:
    """The argument parser: one sub-command per stage of `STAGES`."""
    root = OneLineParser(prog="diffabm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root.add_argument("--version", action="version", version=f"diffabm {package_version()}")
    root.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's, one per core); a Snakemake job uses its `threads`",
    )
    sub = root.add_subparsers(dest="stage", required=True, parser_class=OneLineParser, metavar="<stage>")
    for name, stage in STAGES.items():
        command = sub.add_parser(name, help=stage.help, description=f"{stage.help} ({stage.stage_function})")
        if stage.needs_config:
            command.add_argument("--study", default="default", help="conf/experiment/<study>.yaml")
        for path in stage.paths:
            option, kind = (path[:-1], path[-1]) if path[-1] in "?+=" else (path, "")
            if kind in ("+", "="):
                command.add_argument(
                    f"--{option}",
                    action="append",
                    required=True,
                    metavar="NAME=PATH" if kind == "=" else None,
                    help="repeat the option" + (" (NAME=PATH)" if kind == "=" else ""),
                )
            else:
                command.add_argument(f"--{option}", required=kind != "?")
        for option, settings in stage.options.items():
            command.add_argument(f"--{option}", **settings)
        if stage.needs_config:
            command.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model.days=30")
    return root


def main(argv: list[str] | None = None) -> int:
    """Run one stage on a composed study config; any failure exits 2 with a one-line message."""
    args = parser().parse_args(argv)
    stage = STAGES[args.stage]
    try:
        if args.threads is not None:
            import torch

            torch.set_num_threads(max(args.threads, 1))
        paths = []
        for path in stage.paths:
            option = path.rstrip("?+=")
            value = getattr(args, option.replace("-", "_"))
            paths.append(mapping(option, value) if path.endswith("=") else value)
        options = {option: getattr(args, option.replace("-", "_")) for option in stage.options}
        if stage.needs_config:
            from diffabm.config import compose_study

            paths.insert(0, compose_study(args.study, args.overrides))
        stage.resolve()(*paths, **options)
    except Exception as err:
        return report_failure(args.stage, err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
