"""Runs that survive being killed, bad data that is neither fatal nor silent, checkpoints never half-written.

Training AudioCLIP on AudioSet takes days on many GPUs, so preemption is routine. The pieces:

- `AtomicCheckpointIO`: a checkpoint goes to a temporary file next to its target, is fsynced and renamed over it
  (POSIX `rename` is atomic), so a SIGKILL or a node crash mid-write leaves the previous `last.ckpt` whole.
  Checkpoints are read back with `torch.load(weights_only=True)`: resuming never runs pickled code.
- `StepCheckpoint`: `last.ckpt` every N optimizer steps, not only at epoch end.
- `SaveOnSignal`: SIGTERM / SIGUSR1 (a scheduler's notice before preemption; SLURM: `sbatch --signal=USR1@90`)
  and SIGINT (Ctrl+C) write `last.ckpt` at the end of the current batch, then exit with 128 + the signal.
- `IgnoreTerminationSignals`: the DataLoader workers' `worker_init_fn`. `timeout`, SLURM, Kubernetes and systemd
  signal the whole process group; a worker that died of the signal would take the run down before the main process
  could save. Workers ignore the termination signals, the main process decides and shuts them down.
- `ResumableSampler` + `ResumableDataLoader`: an epoch's order is a function of (seed, epoch), every sample carries
  its own augmentation seed, and the samples consumed are part of the checkpoint. Lightning restores the state of
  a loader that has `state_dict`/`load_state_dict`; a plain DataLoader would replay the epoch from its start with a
  new order, so the resumed run would train on other batches than the uninterrupted one.
- `ResumeState`: what Lightning does not checkpoint and a resumed run needs: the W&B run id, so that it continues
  the same W&B run (`resume="allow"`). The global RNG states are not restored: nothing a training step computes
  draws from them (see `ResumeState`).
- `BadDataLog`: clips replaced under `on_bad_file="skip"`, counted and named in W&B and in `<run>/bad_files.tsv`.

`audioclip fit` (`tasks/cli.py`) installs all of them; see docs/reliability.md for the faults tested.
"""

from __future__ import annotations

import logging
import os
import pathlib
import signal
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.fabric.utilities.seed import pl_worker_init_function
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from audioclip.outputs import OutputError
from audioclip.unloadable import unloadable_reason

log = logging.getLogger(__name__)

BAD_FILES = "bad_files.tsv"
RESUME_KEY = "audioclip_resume_state"  # top-level checkpoint key written by ResumeState


def checkpoint_dir(trainer: L.Trainer) -> Path:
    return Path(trainer.default_root_dir) / "checkpoints"


def last_checkpoint(trainer: L.Trainer) -> Path:
    return checkpoint_dir(trainer) / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to `.<name>.tmp-<pid>` in the target's directory, fsync, `os.replace`; read with `weights_only=True`.

    Lightning's own writer goes through an fsspec transaction without fsync; after a node crash the renamed file
    can still be empty. Remote paths (`s3://...`) keep Lightning's writer: an object store replaces whole objects.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # a process killed mid-write leaves its temporary file behind; a checkpoint can be gigabytes
        for stale in path.parent.glob(f".{path.name}.tmp-*"):
            stale.unlink(missing_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, path)
        except OSError as exc:  # a full disk or a folder gone read-only: the previous checkpoint stays whole
            raise OutputError(
                f"{path}: could not write the checkpoint ({exc.strerror or exc}); free space or move the run with "
                "RUNS= or --trainer.default_root_dir"
            ) from None
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(path.parent)

    def load_checkpoint(self, path: Any, map_location: Any = "cpu", weights_only: bool | None = None) -> dict[str, Any]:
        # A DataModule built in Python may hold its root as a Path in its saved hyper-parameters.
        with torch.serialization.safe_globals([pathlib.PosixPath]):
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's contents without reading its tensors (memory-mapped), safely; ValueError naming the file."""
    try:
        with torch.serialization.safe_globals([pathlib.PosixPath]):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        raise ValueError(f"ckpt_path: {path}: no such checkpoint") from None
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for a bad file
        raise ValueError(
            f"ckpt_path: {path}: not a loadable checkpoint: {unloadable_reason(path, exc)}; expected a checkpoint "
            "that `audioclip fit` wrote (e.g. <run>/checkpoints/last.ckpt)"
        ) from None


class StepCheckpoint(ModelCheckpoint):
    """`last.ckpt` every `every_n_train_steps` optimizer steps (0: never), so preemption loses at most that many.

    The phase's own ModelCheckpoint keeps the best checkpoint on the validation metric and `last.ckpt` at epoch
    ends; both write the same `last.ckpt` (no `last-v1.ckpt`: `enable_version_counter=False`).

    Args:
        every_n_train_steps: optimizer steps between two saves of `last.ckpt`.
        dirpath: where `last.ckpt` goes; default `<default_root_dir>/checkpoints`.
    """

    def __init__(self, every_n_train_steps: int = 500, dirpath: str | None = None) -> None:
        if every_n_train_steps < 0:
            raise ValueError(f"last_checkpoint.every_n_train_steps must be >= 0, got {every_n_train_steps}")
        super().__init__(
            dirpath=dirpath,
            save_top_k=0,
            save_last=True,
            every_n_train_steps=every_n_train_steps,
            enable_version_counter=False,
        )

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = str(checkpoint_dir(trainer))
        super().setup(trainer, pl_module, stage)


def _signal_number(name: str) -> signal.Signals:
    try:
        return signal.Signals[name.upper() if name.upper().startswith("SIG") else f"SIG{name.upper()}"]
    except KeyError:
        raise ValueError(f"save_on_signal.signals: unknown signal {name!r}, e.g. SIGTERM or SIGUSR1") from None


# what a scheduler or a terminal sends to a whole process group to stop a job; workers leave them to the main process
WORKER_IGNORED_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class IgnoreTerminationSignals:
    """A DataLoader `worker_init_fn`: the worker ignores SIGTERM, SIGUSR1 and SIGINT, then runs `then`.

    A signal to the process group (`timeout`, `scancel`, a Kubernetes pod deletion, Ctrl+C) reaches every worker
    too; a worker killed by it makes the main process fail with `DataLoader worker ... is killed by signal`
    before `SaveOnSignal` can write `last.ckpt`. The main process ends its workers itself (a `None` on their index
    queue); a worker whose parent is gone exits on its own within torch's 5 s watchdog interval; SIGKILL still
    kills a worker. `then` defaults to Lightning's worker seeding when `seed_everything(workers=True)` asked for it
    (Lightning adds that only to loaders without a `worker_init_fn`).

    Args:
        rank: the global rank, for Lightning's worker seeding.
        then: another `worker_init_fn` to run after.
    """

    def __init__(self, rank: int = 0, then: Callable[[int], None] | None = None) -> None:
        self.rank, self.then = rank, then

    def __call__(self, worker_id: int) -> None:
        for signum in WORKER_IGNORED_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        if self.then is not None:
            self.then(worker_id)
        elif int(os.environ.get("PL_SEED_WORKERS", 0)):
            pl_worker_init_function(worker_id, rank=self.rank)


class SaveOnSignal(Callback):
    """On SIGTERM, SIGUSR1 or SIGINT, write `last.ckpt` at the end of a batch and exit with 128 + the signal.

    The handler only notes the signal; the decision is taken between batches. In one process that is the end of
    the batch the signal arrived in. Under DDP every rank must stop at the same batch, so the decision is
    all-reduced: the training phases (`AudioCLIPTask.run_step_checks`) do it in the same small all-reduce as
    their NaN/Inf check, every `check_every_n_steps` steps (at 1 s a step and N = 10, within 10 s: inside
    SLURM's `--signal=USR1@90` notice or Kubernetes' default 30 s grace period); any other LightningModule gets one
    all-reduce per batch here.

    SIGTERM is taken over from Lightning, whose handler runs a collective inside the signal handler and, under
    DDP, stops every rank at the next batch without a checkpoint. SIGUSR1 is left to Lightning when its SLURM
    plugin already handles it (auto-requeue: it saves and requeues). SIGINT (Ctrl+C, or `kill -INT`) would raise
    KeyboardInterrupt mid-batch; it is noted instead, and a second SIGINT before the batch ends interrupts at once.
    The DataLoader workers ignore these signals (`IgnoreTerminationSignals`), so a signal to the whole process
    group acts like one to the main process.

    Args:
        signals: signal names to act on.
    """

    def __init__(self, signals: Sequence[str] = ("SIGTERM", "SIGUSR1", "SIGINT")) -> None:
        self.signals = [_signal_number(name) for name in signals]
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
        path = last_checkpoint(trainer)
        trainer.save_checkpoint(path)
        rank_zero_info(f"{signum.name}: saved {path} at global step {trainer.global_step}; resume: --ckpt_path last")
        self._received = None
        raise SIGTERMException(128 + signum)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if getattr(pl_module, "runs_step_checks", False):
            return  # the LightningModule decides, in its own per-step check
        signum = self._received
        if trainer.world_size > 1:
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
    could not make a resumed run equal to the uninterrupted one; `tests/test_faults_resume.py` shows that the
    ESC-50 run is equal, to the bit, without it.
    """

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[RESUME_KEY] = {"wandb_run_id": wandb_run_id(trainer)}


class ResumableSampler(DistributedSampler):
    """`DistributedSampler`'s per-epoch shuffle of this rank's share, yielding `(index, augmentation seed)`.

    The seed of a sample depends on (seed, epoch, index) only, so its augmentation is the same whichever worker
    process loads it and whether or not the run was resumed. `resume(epoch, samples)` makes the next iteration of
    that epoch start after the first `samples` of the epoch's global order.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self._resume_epoch: int | None = None
        self._resume_samples = 0

    def resume(self, epoch: int, samples: int) -> None:
        self.set_epoch(epoch)
        self._resume_epoch, self._resume_samples = epoch, samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())
        if self._resume_epoch == self.epoch:
            # rank r holds the global order's positions r, r + R, ...: the consumed prefix is samples / R of them
            indices = indices[self._resume_samples // self.num_replicas :]
        self._resume_epoch = None
        for index in indices:
            seed = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1, np.uint64)[0]
            yield index, int(seed)


class EvalShardSampler(DistributedSampler):
    """Rank r of R evaluates samples r, r + R, ...: every sample exactly once, unlike `DistributedSampler`, which
    pads the last round with repeats (a test accuracy under DDP would count them). Ranks may get one batch more
    or less; the metrics synchronise once, at the end of the epoch. A `DistributedSampler`, so Lightning keeps it.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, len(self.dataset), self.num_replicas))


class ResumableDataLoader(DataLoader):
    """A training DataLoader over a `ResumableSampler` whose position is saved in Lightning checkpoints.

    The state is the epoch and the number of samples handed out (Lightning does not prefetch from a loader with a
    length, so that is what was trained on). Iteration starts lazily, at the first batch, after Lightning's
    `set_epoch`: worker processes would otherwise prefetch indices of the wrong epoch.
    """

    def __init__(self, dataset: Dataset, sampler: ResumableSampler, **kwargs: Any) -> None:
        super().__init__(dataset, sampler=sampler, **kwargs)
        self._samples = 0

    def __iter__(self) -> Iterator[Any]:
        sampler: ResumableSampler = self.sampler
        self._samples = sampler._resume_samples if sampler._resume_epoch == sampler.epoch else 0
        for batch in super().__iter__():
            self._samples += self.batch_size * sampler.num_replicas
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "samples": self._samples}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["samples"] % (self.batch_size * self.sampler.num_replicas):
            log.warning(
                "resuming mid-epoch with another batch size x world size than the checkpoint's: %d samples of "
                "epoch %d were consumed, the rank's share is rounded down",
                state["samples"],
                state["epoch"],
            )
        self.sampler.resume(state["epoch"], state["samples"])


class BadDataLog(Callback):
    """Counts and names the clips left out (`on_bad_file="skip"`) in W&B and in `<run>/bad_files.tsv`.

    Files that failed when the cache was built come from the DataModule's `skipped_files`; clips found bad while
    training arrive in the batch's `skipped` list (the DataModule replaced them). Each DDP rank writes its own file.
    """

    def __init__(self) -> None:
        self.names: list[str] = []

    def _path(self, trainer: L.Trainer) -> Path:
        name = BAD_FILES if trainer.world_size == 1 else f"bad_files.rank{trainer.global_rank}.tsv"
        return Path(trainer.default_root_dir) / name

    def _record(self, trainer: L.Trainer, stage: str, entries: Sequence[str]) -> None:
        path = self._path(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as file:
            file.writelines(f"{trainer.global_step}\t{stage}\t{entry}\n" for entry in entries)
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
