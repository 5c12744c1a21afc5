"""Checkpoint files that are never half-written, and where a run keeps them.

- `AtomicCheckpointIO`: a checkpoint goes to a temporary file next to its target, is fsynced and renamed over it
  (POSIX `rename` is atomic), so a SIGKILL or a node crash mid-write leaves the previous `last.ckpt` whole.
  Checkpoints are read back with `torch.load(weights_only=True)`: resuming never runs pickled code.
- `read_resume_checkpoint`: what `--ckpt_path` names, read before anything is built; a missing, truncated or unsafe file
  is one line naming it.
- A run folder may be an object-store URL (`s3://bucket/runs/...`, `audioclip.storage`): its checkpoints are then
  objects there, written by Lightning's fsspec writer (an object is replaced whole or not at all).

`audioclip fit` (`tasks/cli.py`) installs the writer; see docs/reliability.md for the faults tested.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from audioclip.models.pretrained import RUN_CHECKPOINTS, UnloadableFileError, read_checkpoint, safe_loading
from audioclip.outputs import OutputError
from audioclip.storage import join, storage_errors

RESUME_KEY = "audioclip_resume_state"  # top-level checkpoint key written by ResumeState


CHECKPOINTS_DIR = RUN_CHECKPOINTS  # a run directory's checkpoint folder (docs/training.md)
LAST = f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"


def checkpoint_dir(root: str | Path) -> str | Path:
    """Where the run in `root` (its `default_root_dir`: a folder, or an object-store URL) keeps its checkpoints."""
    return join(root, CHECKPOINTS_DIR)


def last_checkpoint(root: str | Path) -> str | Path:
    """The run's `last.ckpt`, what `--ckpt_path last` and `RESUME=1` resume."""
    return join(checkpoint_dir(root), LAST)


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
            with storage_errors(path):  # a refused or unreachable object store: one line naming the checkpoint
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
        # the safety policy of every weight read (`weights_only=True`; a Path in saved hyper-parameters allowed)
        with safe_loading():
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)


def read_resume_checkpoint(path: str | Path) -> Mapping[str, Any]:
    """What `--ckpt_path` names, read by the one reader (`audioclip.models.pretrained.read_checkpoint`, its tensors
    memory-mapped); ValueError naming the setting and the file."""
    try:
        return read_checkpoint(path)
    except FileNotFoundError:
        raise ValueError(f"ckpt_path: {path}: no such checkpoint") from None
    except UnloadableFileError as error:
        raise ValueError(
            f"ckpt_path: {path}: not a loadable checkpoint: {error.reason}; expected a checkpoint that `audioclip fit` "
            "wrote (e.g. <run>/checkpoints/last.ckpt)"
        ) from None
