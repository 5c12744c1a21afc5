"""Outputs that cannot be written: one line naming the path and the setting that moves it, no partial file.

A read-only folder, a missing mount or a full disk surface as `OutputError` (a ValueError: `audioclip` prints it
as one line and exits with 2). Writability is checked before the first expensive step; a file is written to a
temporary name in its folder and renamed over the target, so a full disk mid-write leaves no partial file.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


class OutputError(ValueError):
    """An output path that cannot be written, named with the setting that moves it."""


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def check_writable_dir(directory: str | Path, setting: str) -> Path:
    """OutputError unless `directory` exists and is writable, or can be created. Nothing is left behind: the
    nearest existing folder is probed with a temporary file, so a run that fails later leaves no empty folders."""
    directory = Path(directory)
    existing = directory.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".audioclip-write-test-"):
            pass
    except OSError as exc:
        problem = "not writable" if existing == directory.absolute() else "cannot create this folder"
        raise OutputError(f"{directory}: {problem} ({_reason(exc)}); move it with {setting}") from None
    return directory


def make_dir(directory: str | Path, setting: str) -> Path:
    """`directory`, created if needed; OutputError naming it and `setting` if it cannot be."""
    directory = check_writable_dir(directory, setting)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{directory}: cannot create this folder ({_reason(exc)}); move it with {setting}") from None
    return directory


@contextmanager
def atomic_output(path: str | Path, setting: str, mode: str = "w") -> Iterator[IO]:
    """A file opened at a temporary name next to `path`, renamed over it when the block ends without error."""
    path = Path(path)
    make_dir(path.parent, setting)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, mode) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"{path}: could not be written ({_reason(exc)}); move it with {setting}") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str, setting: str) -> None:
    with atomic_output(path, setting) as file:
        file.write(text)


def write_with(path: str | Path, setting: str, writer: Callable[[IO], None]) -> None:
    """`writer(file)` into a binary file at `path`, atomically (e.g. `lambda f: torch.save(obj, f)`)."""
    with atomic_output(path, setting, mode="wb") as file:
        writer(file)


# W&B copies what a run logs in tables (audio, images) into `$WANDB_DATA_DIR/artifacts/staging`, by default
# `~/.local/share/wandb`: outside the run, so a copied offline run lost its media (wandb/server#149)
STAGING_ENV = "WANDB_DATA_DIR"


def stage_media_in(run_dir: str | Path) -> None:
    """W&B stages what the runs started from now on log (tables, their audio and images) in `<run_dir>/wandb/`
    (W&B reads `WANDB_DATA_DIR` at every log call)."""
    os.environ[STAGING_ENV] = str((Path(run_dir) / "wandb").resolve())
