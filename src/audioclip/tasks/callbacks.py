"""Training callbacks: runs that survive being killed, bad data that is neither fatal nor silent, fast layouts.

Training AudioCLIP on AudioSet takes days on many GPUs, so preemption is routine. The pieces:

- `StepCheckpoint`: `last.ckpt` every N optimizer steps, not only at epoch end.
- `SaveOnSignal`: SIGTERM / SIGUSR1 (a scheduler's notice before preemption; SLURM: `sbatch --signal=USR1@90`)
  and SIGINT (Ctrl+C) write `last.ckpt` at the end of the current batch, then exit with 128 + the signal.
- `TestMetricsFile`: the test metrics, the checkpoint they are of, the lineage of its weights and the class names
  and template it was tested with in `<run>/test_metrics.json`, which `audioclip crossval`, `make report` and
  `audioclip export` read.
- `ResumeState`: what Lightning does not checkpoint and a resumed run needs: the W&B run id, so that it continues
  the same W&B run (`resume="allow"`). The global RNG states are not restored: nothing a training step computes
  draws from them (see `ResumeState`).
- `BadDataLog`: clips replaced under `on_bad_file="skip"`, counted and named in W&B and in `<run>/bad_files.tsv`.
- `ChannelsLast`: convolution weights in channels-last memory format, for bf16-mixed on CPUs and GPUs.

The NaN/Inf guard is `audioclip.tasks.nonfinite`, the checkpoint writer `audioclip.tasks.checkpoints`, the resumable
sampler and the signal-deaf DataLoader workers `audioclip.data.samplers`. The run-safety callbacks are configured in
`conf/trainer.yaml` (`last_checkpoint`, `save_on_signal`, `nonfinite_guard`, `metrics_file`); a LightningModule
knows none of them. See docs/reliability.md for the faults tested.
"""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from audioclip.models.lineage import result_fields
from audioclip.models.pretrained import RUN_METRICS
from audioclip.storage import append_text, join, write_text
from audioclip.tasks.checkpoints import LAST, RESUME_KEY, checkpoint_dir, last_checkpoint

log = logging.getLogger(__name__)

BAD_FILES = "bad_files.tsv"


class StepCheckpoint(Callback):
    """`last.ckpt` every `every_n_train_steps` optimizer steps (0: only at epoch ends), so preemption loses at most
    that many, and at the end of every training epoch.

    The phase's own ModelCheckpoint keeps the best checkpoint on the validation metric and `last.ckpt` after each
    validation; both write the same `last.ckpt`. Nothing is written when checkpointing is off
    (`--trainer.enable_checkpointing false`) or under `fast_dev_run`.

    Args:
        every_n_train_steps: optimizer steps between two saves of `last.ckpt`.
        dirpath: where `last.ckpt` goes; default `<default_root_dir>/checkpoints`.
    """

    def __init__(self, every_n_train_steps: int = 500, dirpath: str | None = None) -> None:
        if every_n_train_steps < 0:
            raise ValueError(f"last_checkpoint.every_n_train_steps must be >= 0, got {every_n_train_steps}")
        self.every_n_train_steps, self.dirpath = every_n_train_steps, dirpath
        self._saved_at: int | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.every_n_train_steps >= 1 and trainer.global_step % self.every_n_train_steps == 0:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)  # also when max_steps ends an epoch early, before any validation could save it

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.global_step == self._saved_at or trainer.fast_dev_run or trainer.sanity_checking:
            return
        if not trainer.checkpoint_callbacks:
            return  # checkpointing is off: `enable_checkpointing: false` leaves no checkpoint callback
        directory = self.dirpath or checkpoint_dir(trainer.default_root_dir)
        trainer.save_checkpoint(join(directory, LAST))
        self._saved_at = trainer.global_step


def _signal_number(name: str) -> signal.Signals:
    try:
        return signal.Signals[name.upper() if name.upper().startswith("SIG") else f"SIG{name.upper()}"]
    except KeyError:
        raise ValueError(f"save_on_signal.signals: unknown signal {name!r}, e.g. SIGTERM or SIGUSR1") from None


class SaveOnSignal(Callback):
    """On SIGTERM, SIGUSR1 or SIGINT, write `last.ckpt` at the end of a batch and exit with 128 + the signal.

    The handler only notes the signal; the decision is taken between batches. In one process that is the end of
    the batch the signal arrived in. Under DDP every rank must stop at the same batch, so the decision is one small
    all-reduce every `check_every_n_steps` steps and at an epoch's last batch (at 1 s a step and N = 10, within
    10 s: inside SLURM's `--signal=USR1@90` notice or Kubernetes' default 30 s grace period).

    SIGTERM is taken over from Lightning, whose handler runs a collective inside the signal handler and, under
    DDP, stops every rank at the next batch without a checkpoint. SIGUSR1 is left to Lightning when its SLURM
    plugin already handles it (auto-requeue: it saves and requeues). SIGINT (Ctrl+C, or `kill -INT`) would raise
    KeyboardInterrupt mid-batch; it is noted instead, and a second SIGINT before the batch ends interrupts at once.
    The DataLoader workers ignore these signals (`IgnoreTerminationSignals`), so a signal to the whole process
    group acts like one to the main process.

    Args:
        signals: signal names to act on.
        check_every_n_steps: under DDP, how often the ranks agree on a pending signal (one all-reduce).
    """

    def __init__(
        self, signals: Sequence[str] = ("SIGTERM", "SIGUSR1", "SIGINT"), check_every_n_steps: int = 10
    ) -> None:
        if check_every_n_steps < 1:
            raise ValueError(f"save_on_signal.check_every_n_steps: must be >= 1, got {check_every_n_steps}")
        self.signals = [_signal_number(name) for name in signals]
        self.check_every_n_steps = check_every_n_steps
        self._received: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def _note(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self._received == signal.SIGINT:
            raise KeyboardInterrupt  # Ctrl+C twice: the user does not want to wait for the batch
        self._received = signal.Signals(signum)

    @property
    def pending(self) -> signal.Signals | None:
        """The signal this process received and has not acted on yet."""
        return self._received

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._received = None
        # Lightning registered its own handlers just before
        for signum in self.signals:
            if signum == signal.SIGTERM or signal.getsignal(signum) in (signal.SIG_DFL, signal.default_int_handler):
                self._previous[signum] = signal.signal(signum, self._note)

    def save_and_stop(self, trainer: L.Trainer, signum: int) -> None:
        """Write `last.ckpt` (every rank takes part) and stop with exit code 128 + signum."""
        signum = signal.Signals(signum)
        path = last_checkpoint(trainer.default_root_dir)
        trainer.save_checkpoint(path)
        rank_zero_info(f"{signum.name}: saved {path} at global step {trainer.global_step}; resume: --ckpt_path last")
        self._received = None
        raise SIGTERMException(128 + signum)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        signum = self._received
        if trainer.world_size > 1:
            if trainer.global_step % self.check_every_n_steps and not trainer.is_last_batch:
                return
            code = torch.tensor([0 if signum is None else int(signum)], device=pl_module.device)
            signum = int(trainer.strategy.reduce(code, reduce_op="max").item()) or None
        if signum is not None:
            self.save_and_stop(trainer, signum)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


def wandb_run_id(trainer: L.Trainer) -> str | None:
    return next((logger.version for logger in trainer.loggers if isinstance(logger, WandbLogger)), None)


class ResumeState(Callback):
    """Checkpoints the W&B run id, which Lightning leaves out; `audioclip fit --ckpt_path ...` reads it back before
    the logger starts.

    The global RNG states are deliberately not checkpointed. A training step draws nothing from them: the
    ESC-50 / US8K batches and their augmentations follow (seed, epoch, index) through `ResumableSampler`, and the
    models have no dropout. AudioSet's frame choice and augmentations do draw from the global generator, but in
    the loader workers, which `DataLoader` seeds when the epoch's iterator is created, before any training-batch
    hook could restore a state (and with `num_workers=0` the first batch is drawn before it too). A restore there
    could not make a resumed run equal to the uninterrupted one; `tests/faults/test_kill_and_resume.py` shows that the
    ESC-50 run is equal, to the bit, without it.
    """

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[RESUME_KEY] = {"wandb_run_id": wandb_run_id(trainer)}


class TestMetricsFile(Callback):
    """`<run>/test_metrics.json` at the end of a test: the test metrics, the checkpoint they are of, and (for the
    training phases) the model variant, data, folds and protocol of its weights (`audioclip.models.lineage`), so that
    `audioclip crossval` and `make report` never recover them from a folder name.

    Args:
        filename: the file's name inside the run directory.
    """

    def __init__(self, filename: str = RUN_METRICS) -> None:
        self.filename = filename

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        record: dict[str, Any] = {"checkpoint": str(trainer.ckpt_path or ""), **metrics}
        lineage = getattr(pl_module, "lineage", None)
        if callable(lineage):
            made = lineage()
            record.update(result_fields(made, made["model"], made["steps"][-1]))
            record["result"] = pl_module.scores_against
        # the classes and the prompt the test scored against: `audioclip export` writes them into the model's config
        names = list(getattr(trainer.datamodule, "class_names", None) or [])
        if names:
            record["class_names"] = names
            record["template"] = getattr(pl_module.hparams, "template", "{}")
        path = join(trainer.default_root_dir, self.filename)  # a folder, or an object-store run root
        write_text(path, json.dumps(record, indent=2) + "\n", "RUNS= or --trainer.default_root_dir")


class BadDataLog(Callback):
    """Counts and names the clips left out (`on_bad_file="skip"`) in W&B and in `<run>/bad_files.tsv`.

    Files that failed when the cache was built come from the DataModule's `skipped_files`; clips found bad while
    training arrive in the batch's `skipped` list (the DataModule replaced them). Each DDP rank writes its own file.
    """

    def __init__(self) -> None:
        self.names: list[str] = []

    def _path(self, trainer: L.Trainer) -> str | Path:
        name = BAD_FILES if trainer.world_size == 1 else f"bad_files.rank{trainer.global_rank}.tsv"
        return join(trainer.default_root_dir, name)

    def _record(self, trainer: L.Trainer, stage: str, entries: Sequence[str]) -> None:
        path = self._path(trainer)
        append_text(path, "".join(f"{trainer.global_step}\t{stage}\t{entry}\n" for entry in entries))
        self.names.extend(entries)
        log.warning("%d bad file(s) left out so far (%s); latest: %s", len(self.names), path, entries[-1])
        for logger in trainer.loggers:
            logger.log_metrics({"data/bad_files": len(self.names)}, step=trainer.global_step)
            if isinstance(logger, WandbLogger) and trainer.is_global_zero:
                logger.experiment.summary["data/bad_file_names"] = self.names[-100:]

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        skipped = list(getattr(trainer.datamodule, "skipped_files", []))
        if skipped:
            self._record(trainer, "setup", [f"{name}: left out when the cache was built" for name in skipped])

    def _on_batch(self, trainer: L.Trainer, batch: Any, stage: str) -> None:
        if isinstance(batch, dict) and batch.get("skipped"):
            self._record(trainer, stage, batch["skipped"])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._on_batch(trainer, batch, "train")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._on_batch(trainer, batch, "val")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._on_batch(trainer, batch, "test")


class ChannelsLast(Callback):
    """Convolution weights in channels-last memory format: with `precision: bf16-mixed` this lets oneDNN use
    the AMX / tensor-core kernels (measured by `make bench-train`: 2.9x the fp32 throughput on a 2-core CPU).

        audioclip fit ... --trainer.precision bf16-mixed --trainer.callbacks+=audioclip.tasks.ChannelsLast
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # before the strategy wraps the model: DDP's gradient buckets then take the channels-last strides (converted
        # after wrapping, every step copies each bucket: "grad strides do not match bucket view strides")
        pl_module.to(memory_format=torch.channels_last)
