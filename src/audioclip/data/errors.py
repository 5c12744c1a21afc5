"""Bad samples: the errors that name a dataset file and its problem, and the `on_bad_file` policy.

A file that cannot be used is a `BadFileError` whose message is `"<path>: <problem>"` (one line at the CLI, exit
code 2). `on_bad_file="error"` (the default) stops on the first one; `"skip"` leaves it out, replaces it by the next
good sample and lists it in the item's `skipped`, which `audioclip.tasks.callbacks.BadDataLog` reports. Every
DataModule (ESC-50, UrbanSound8K, own data, AudioSet) follows this policy.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch


OnBadFile = Literal["error", "skip"]


class BadFileError(ValueError):
    """A dataset file that cannot be used; the message is ``"<path>: <problem>"``."""

    def __init__(self, path: Path | str, problem: str | None = None) -> None:
        if problem is None:
            # Re-raised from a DataLoader worker: torch rebuilds the error from one string, its report ending in
            # the line "audioclip.data.errors.BadFileError: <path>: <problem>"; keep the file named, in one line.
            path, _, problem = str(path).strip().splitlines()[-1].split(": ", 1)[-1].partition(": ")
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem

    def __reduce__(self) -> tuple:
        return type(self), (self.path, self.problem)

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


class MissingFileError(BadFileError, FileNotFoundError):
    """A file listed in the metadata that does not exist."""

    def __init__(self, path: Path | str, problem: str = "file is missing") -> None:
        super().__init__(path, problem)


class MetadataError(BadFileError):
    """A metadata file whose columns or values do not fit the dataset's official layout."""


class DatasetNotFoundError(FileNotFoundError):
    """The dataset root, its metadata file or its audio folder does not exist."""


def clip_problem(audio: torch.Tensor, length: int, max_length: int) -> str | None:
    """What is wrong with a decoded clip (channels, samples) of ``length`` valid samples, or None."""
    import torch  # here: the metadata readers import this module without torch (`audioclip.data.layouts`)

    if not 0 < length <= max_length:
        return f"decoded to the wrong length ({length} samples; expected 1..{max_length})"
    if not torch.isfinite(audio).all():
        return "decoded to NaN/Inf samples"
    if not audio.any():
        return "decoded to digital silence (every sample 0)"
    return None


def check_on_bad_file(on_bad_file: str) -> None:
    """The `on_bad_file` setting of every dataset: "error" or "skip"."""
    if on_bad_file not in ("error", "skip"):
        raise ValueError(f"on_bad_file must be 'error' or 'skip', got {on_bad_file!r}")


def first_usable(
    load: Callable[[int], dict[str, Any]], count: int, on_bad_file: OnBadFile, where: Path | str
) -> dict[str, Any]:
    """`load(0)`; when it raises `BadFileError` under `on_bad_file="skip"`, `load(1)`, `load(2)`, ... (the next
    samples) until one loads, its item listing the problems of those left out in `skipped`."""
    skipped = []
    for offset in range(count):
        try:
            item = load(offset)
        except BadFileError as error:
            if on_bad_file == "error":
                raise
            skipped.append(str(error))
            continue
        if skipped:
            item["skipped"] = skipped
        return item
    raise BadFileError(where, f"no usable sample left ({len(skipped)} bad)")
