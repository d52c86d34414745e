"""Training a calibration mode with Lightning, resumable only as a retry of the same run.

A run asked to resume (`resume=True`: a Snakemake retry, attempt > 1, or `diffabm calibrate --resume`)
with an existing checkpoint of the same run key (`run_configuration`: resolved config, run seed, digests
of the input stores, package version, commit and source) resumes from it; simulator seeds are functions
of (seed, step), so the result equals that of an uninterrupted run. Any other run, `snakemake -f`
included, deletes the checkpoint and fits afresh.

The Trainer runs in Lightning's plain single-node cluster environment, also inside a SLURM job: a
Snakemake job is one process, retried by Snakemake, so Lightning's SLURM environment (its `srun` hint,
its own auto-requeue on SIGUSR1) would only fight the workflow.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

import diffabm
from diffabm.build import build_loggers, build_trainer
from diffabm.calibration.priors import Prior
from diffabm.calibration.setup import build_module
from diffabm.calibration.target import CalibrationTarget
from diffabm.store import atomic_write_text, content_digest, git_commit, one_line, source_digest

if TYPE_CHECKING:
    from diffabm.calibration.module import CalibrationModule

log = logging.getLogger(__name__)


def resumable_checkpoint(checkpoint_dir: Path, run_config: str, epochs: int, resume: bool = False) -> Path | None:
    """With `resume`, `last.ckpt` if it was written by the same run configuration and not beyond `epochs`;
    otherwise clear the checkpoint directory (a fresh run).

    The checkpoint is read with `weights_only=True` (tensors and plain containers only), so a planted file
    cannot run code; one that does not load that way is an error naming it.
    """
    last, recorded = checkpoint_dir / "last.ckpt", checkpoint_dir / "run_config.yaml"
    if resume and last.exists() and recorded.exists() and recorded.read_text() == run_config:
        try:
            epoch = torch.load(last, map_location="cpu", weights_only=True)["epoch"]
        except Exception as err:
            raise ValueError(
                f"checkpoint {last} cannot be loaded safely ({one_line(err)}); delete it to start afresh"
            ) from err
        if epoch <= epochs:
            log.info("resuming from %s (epoch %d)", last, epoch)
            return last
    if checkpoint_dir.exists():
        why = "no checkpoint of this run configuration and its inputs" if resume else "not a retry"
        log.info("starting afresh (%s): deleting %s", why, checkpoint_dir)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    atomic_write_text(recorded, run_config)
    return None


def run_configuration(cfg: DictConfig, mode: str, seed: int, inputs: Mapping[str, str | Path | None]) -> str:
    """Everything a run's result depends on, as YAML, the key under which its checkpoint may be resumed:
    the resolved config (all but the number of epochs, which a constant learning rate lets a rerun extend;
    a decaying one depends on it), the run seed, a content digest of every input store or file, and the
    package's version, git commit and source digest. Any change starts a fresh run."""
    container = OmegaConf.to_container(cfg, resolve=True)
    if container["calibration"][mode]["lr_schedule"] == "constant":
        container["calibration"][mode].pop("epochs")
    container["run"] = {
        "seed": seed,
        "inputs": {name: content_digest(path) for name, path in inputs.items() if path is not None},
        "diffabm_version": diffabm.__version__,
        "git_commit": git_commit(),
        "source": source_digest(),
    }
    return OmegaConf.to_yaml(OmegaConf.create(container))


def merged_metrics(csv_dir: Path) -> pd.DataFrame:
    """Metrics of all (resumed) CSVLogger versions, each cut where the next one resumed."""
    versions = sorted(csv_dir.glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    frames = [pd.read_csv(path) for path in versions if path.stat().st_size]
    kept = [frame[frame["step"] < later["step"].min()] for frame, later in itertools.pairwise(frames)]
    return pd.concat([*kept, *frames[-1:]], ignore_index=True) if frames else pd.DataFrame()


def epoch_log(epochs: int):
    """A Lightning callback that logs one plain line per epoch (epoch, step, the epoch means of the logged
    metrics): the progress in a job's log file, where a progress bar would write carriage returns."""
    from lightning.pytorch.callbacks import Callback

    class EpochLog(Callback):
        def on_train_epoch_end(self, trainer, module) -> None:
            metrics = ", ".join(
                f"{name.removesuffix('_epoch')} {value.item():.5g}"
                for name, value in sorted(trainer.callback_metrics.items())
                if name.endswith("_epoch") and value.numel() == 1
            )
            log.info(
                "epoch %d/%d (step %d): %s",
                trainer.current_epoch + 1,
                epochs,
                trainer.global_step,
                metrics or "no metrics",
            )

    return EpochLog()


def train(
    cfg: DictConfig,
    mode: str,
    target: CalibrationTarget,
    prior: Prior,
    run_dir: Path,
    seed: int,
    run_name: str,
    inputs: Mapping[str, str | Path | None] | None = None,
    resume: bool = False,
) -> CalibrationModule:
    """Fit `mode` with a Lightning Trainer. With `resume` (a retry of the same job), continue from the run's
    last checkpoint if it has the same configuration and `inputs` (name: store or file path; see
    `run_configuration`); otherwise delete any checkpoint and fit afresh."""
    import lightning as L
    from lightning.fabric.plugins.environments import LightningEnvironment
    from lightning.fabric.utilities.warnings import PossibleUserWarning
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    settings = cfg.calibration[mode]
    # The loader yields step indices only; worker processes would not help.
    warnings.filterwarnings("ignore", message=".*does not have many workers.*", category=PossibleUserWarning)
    # Lightning 2.6 calls `SLURMEnvironment.detect()` on every fit without a checkpoint path, whatever cluster
    # environment the Trainer has, and it warns wherever `srun` is on the PATH; the environment is ours (below).
    warnings.filterwarnings(
        "ignore", message="The `srun` command is available on your system", category=PossibleUserWarning
    )
    # The checkpoint directory holds the run's own `last.ckpt` and run_config.yaml: resuming is the point.
    warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
    # Lightning prints through its own handler; passing its records on to the root logger too would repeat them.
    logging.getLogger("lightning.pytorch").propagate = False
    L.seed_everything(seed, verbose=False)
    module = build_module(mode, settings, target, prior, seed)
    checkpoint_dir = run_dir / "checkpoints"
    checkpoint = resumable_checkpoint(
        checkpoint_dir, run_configuration(cfg, mode, seed, inputs or {}), settings.epochs, resume
    )
    if checkpoint is None:  # a fresh run: the loggers' files of an earlier one would pile up beside it
        for folder in ("csv", "wandb"):
            shutil.rmtree(run_dir / folder, ignore_errors=True)
    # A progress bar redraws with carriage returns: only on a terminal, never in a job's log file, which gets
    # one line per epoch instead.
    progress_bar = bool(cfg.calibration.progress_bar) and sys.stderr.isatty()
    trainer = build_trainer(
        cfg,
        max_epochs=settings.epochs,
        logger=build_loggers(cfg, run_dir, run_name, mode),
        # `last.ckpt` rewritten every epoch (save_last alone writes it only when training ends).
        callbacks=[
            ModelCheckpoint(
                dirpath=checkpoint_dir, filename="last", save_top_k=1, every_n_epochs=1, enable_version_counter=False
            ),
            LearningRateMonitor(logging_interval="step"),
            *([] if progress_bar else [epoch_log(settings.epochs)]),
        ],
        enable_progress_bar=progress_bar,
        default_root_dir=run_dir,
        # One process, retried by Snakemake (not Lightning's SLURM auto-requeue), even inside a SLURM job.
        plugins=[LightningEnvironment()],
    )
    trainer.fit(module, ckpt_path=checkpoint, weights_only=True)
    for logger in trainer.loggers:  # a W&B run ends with its job: its config and summary are written then
        if type(logger).__name__ == "WandbLogger":
            logger.experiment.finish()
    atomic_write_text(run_dir / "metrics.csv", merged_metrics(run_dir / "csv").to_csv(index=False))
    return module
