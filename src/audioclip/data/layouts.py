"""What a fold-based dataset's metadata says, read without decoding anything and without torch or Lightning:
its rows (`ClipRecord`), its official layout (`FoldLayout`: ESC-50's and UrbanSound8K's), its class names.

`audioclip fit` reads the class count here before Lightning is even imported (`audioclip.tasks.entry`), so a
configuration that does not fit the data is refused within a second or two; the DataModules read the same layouts.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from audioclip.constants import ESC50_FOLDS, US8K_FOLDS
from audioclip.data.errors import DatasetNotFoundError, MetadataError


def class_text(name: str) -> str:
    """The text of a class name: ``dog_bark`` -> ``dog bark``."""
    return name.replace("_", " ").strip()


@dataclass(frozen=True)
class ClipRecord:
    """One row of a dataset's metadata."""

    id: str  # the file name, unique within the dataset
    path: Path
    fold: int
    target: int
    label: str  # the class name as written in the metadata, e.g. "dog_bark"


@dataclass(frozen=True)
class FoldLayout:
    """How a fold-based dataset's official layout names things: ESC-50 and UrbanSound8K differ only here (and in
    their decoders)."""

    metadata: Path  # the metadata CSV, relative to the root
    id: str  # the columns of the file name, the fold, the class index and the class name
    fold: str
    target: str
    label: str
    num_folds: int
    audio: str  # an audio file's path relative to the root, with {id} and {fold}

    def read(self, root: Path) -> list[ClipRecord]:
        """The metadata's rows as records; only the columns named here are required."""
        path = root / self.metadata
        records = []
        for line, row in read_metadata_csv(path, (self.id, self.fold, self.target, self.label)):
            fold = parse_int(path, line, self.fold, row[self.fold], 1, self.num_folds)
            records.append(
                ClipRecord(
                    id=row[self.id],
                    path=root / self.audio.format(id=row[self.id], fold=fold),
                    fold=fold,
                    target=parse_int(path, line, self.target, row[self.target], 0, 10**6),
                    label=row[self.label],
                )
            )
        return records


def read_metadata_csv(path: Path, columns: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV with their line numbers, after checking that every required column is present."""
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: metadata file does not exist")
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        missing = [column for column in columns if column not in (reader.fieldnames or [])]
        if missing:
            raise MetadataError(
                path, f"missing column(s) {missing}; expected columns {list(columns)}, found {reader.fieldnames}"
            )
        return [(line, row) for line, row in enumerate(reader, start=2)]


def parse_int(path: Path, line: int, column: str, value: str | None, low: int, high: int) -> int:
    """An integer metadata field in ``low..high``, or a ``MetadataError`` naming file, line and column."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise MetadataError(path, f"line {line}: column {column!r} must be an integer, got {value!r}") from None
    if not low <= number <= high:
        raise MetadataError(path, f"line {line}: column {column!r} must be in {low}..{high}, got {number}")
    return number


def class_names(records: Sequence[ClipRecord], metadata_path: Path) -> list[str]:
    """Class names (as text) indexed by target; the metadata must map targets 0..K-1 one-to-one to labels."""
    by_target: dict[int, str] = {}
    for record in records:
        if by_target.setdefault(record.target, record.label) != record.label:
            raise MetadataError(
                metadata_path,
                f"class index {record.target} is both {by_target[record.target]!r} and {record.label!r}",
            )
    if sorted(by_target) != list(range(len(by_target))):
        raise MetadataError(metadata_path, f"class indices must run 0..K-1, got {sorted(by_target)}")
    return [class_text(by_target[target]) for target in range(len(by_target))]


ESC50_METADATA = Path("meta") / "esc50.csv"
ESC50_LAYOUT = FoldLayout(ESC50_METADATA, id="filename", fold="fold", target="target", label="category",
                          num_folds=ESC50_FOLDS, audio="audio/{id}")  # fmt: skip
US8K_METADATA = Path("metadata") / "UrbanSound8K.csv"
US8K_LAYOUT = FoldLayout(US8K_METADATA, id="slice_file_name", fold="fold", target="classID", label="class",
                         num_folds=US8K_FOLDS, audio="audio/fold{fold}/{id}")  # fmt: skip
# the official layout each DataModule reads, by class name (`audioclip.tasks.entry` looks a `data.class_path` up here)
LAYOUTS = {"ESC50DataModule": ESC50_LAYOUT, "US8KDataModule": US8K_LAYOUT}


def declared_class_names(layout: FoldLayout, root: str | Path) -> list[str]:
    """The class names the metadata under `root` declares, indexed by target."""
    root = Path(root)
    return class_names(layout.read(root), root / layout.metadata)
