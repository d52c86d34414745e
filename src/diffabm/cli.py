"""Thin command-line entry points: `diffabm <stage> --study S [paths] [Hydra overrides ...]`."""

from __future__ import annotations

import argparse
import sys

from diffabm.config import ConfigError, compose_study


def main(argv: list[str] | None = None) -> int:
    """Run one stage on a composed study config; errors exit non-zero with a one-line message."""
    parser = argparse.ArgumentParser(prog="diffabm", description=__doc__)
    sub = parser.add_subparsers(dest="stage", required=True)
    stages = {
        "synthesize": ("population", "report"),
        "simulate": ("population", "output"),
        "plot-epidemic": ("simulation", "output"),
        "observe": ("population", "output"),
        "calibrate": ("mode", "population", "observed", "run-dir"),
        "loss-weight": ("population", "observed", "posterior"),
        "config": (),
    }
    optional = {"calibrate": ("loss-weight",), "loss-weight": ("output",)}
    for name, paths in stages.items():
        stage = sub.add_parser(name)
        stage.add_argument("--study", default="default")
        for path in paths:
            stage.add_argument(f"--{path}", required=True)
        for path in optional.get(name, ()):
            stage.add_argument(f"--{path}")
        stage.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model.days=30")
    args = parser.parse_args(argv)
    try:
        cfg = compose_study(args.study, args.overrides)
        if args.stage == "config":
            from omegaconf import OmegaConf

            print(OmegaConf.to_yaml(cfg))
        elif args.stage == "synthesize":
            from diffabm.population.synthesize import synthesize

            synthesize(cfg, args.population, args.report)
        elif args.stage == "simulate":
            from diffabm.simulation import simulate

            simulate(cfg, args.population, args.output)
        elif args.stage == "plot-epidemic":
            from diffabm.figures.epidemic import plot_epidemic_curve

            plot_epidemic_curve(args.simulation, args.output)
        elif args.stage == "observe":
            from diffabm.calibration.observe import observe

            observe(cfg, args.population, args.output)
        elif args.stage == "calibrate":
            from diffabm.calibration.stage import calibrate

            calibrate(cfg, args.mode, args.population, args.observed, args.run_dir, loss_weight_path=args.loss_weight)
        elif args.stage == "loss-weight":
            from diffabm.calibration.weight import print_loss_weight, write_loss_weight

            if args.output:
                write_loss_weight(cfg, args.population, args.observed, args.posterior, args.output)
            else:
                print_loss_weight(cfg, args.population, args.observed, args.posterior)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        print(f"diffabm {args.stage}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
