"""What a dataset's metadata says, read without decoding anything and without torch or Lightning: a fold-based
dataset's rows (`ClipRecord`), its official layout (`FoldLayout`: ESC-50's and UrbanSound8K's), its class names; your
own data's class-folder tree or CSV/TSV manifest (`read_tree`, `read_manifest`).

`audioclip fit` reads the class count here before Lightning is even imported (`audioclip.tasks.entry`), so a
configuration that does not fit the data is refused within a second or two; the DataModules read the same layouts.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from audioclip.constants import ESC50_FOLDS, US8K_FOLDS
from audioclip.data.errors import DatasetNotFoundError, MetadataError

log = logging.getLogger(__name__)


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


# ---- your own data: a class-folder tree or a CSV/TSV manifest (`audioclip.data.folder`) ----
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
LABEL_COLUMNS = ("label", "labels", "caption")
SPLITS = ("train", "val", "test")
Task = Literal["class", "multilabel", "caption"]
# the label column of a manifest -> what fine-tuning and evaluation do with it
TASK_OF_COLUMN: dict[str, Task] = {"label": "class", "labels": "multilabel", "caption": "caption"}


@dataclass
class FolderRecord:
    """One clip of a tree or manifest; ``ClipDataset`` reads ``id``, ``path`` and ``target``."""

    id: str  # the path relative to the tree root or the manifest's folder: unique
    path: Path
    labels: tuple[int, ...] = ()  # class indices; empty for captions
    caption: str = ""
    fold: int | None = None
    split: str | None = None
    target: Any = field(default=None)  # int class / caption index, or a multi-hot tensor (multi-label)


def _delimiter(manifest: Path) -> str:
    return "\t" if manifest.suffix.lower() == ".tsv" else ","


def manifest_task(manifest: Path) -> Task:
    """Which task a manifest's columns describe; one-line errors for a missing file or missing columns."""
    if not manifest.is_file():
        raise DatasetNotFoundError(f"{manifest}: manifest file does not exist")
    with open(manifest, newline="", encoding="utf-8-sig") as file:
        header = next(csv.reader(file, delimiter=_delimiter(manifest)), [])
    header = [name.strip() for name in header]
    given = [column for column in LABEL_COLUMNS if column in header]
    if "path" not in header or len(given) != 1:
        problem = (
            "missing column 'path'"
            if "path" not in header
            else ("missing a label column" if not given else f"several label columns {given}")
        )
        raise MetadataError(
            manifest,
            f"{problem}; a manifest has the columns 'path' and one of {list(LABEL_COLUMNS)} "
            f"(optional 'fold' or 'split'), found {header}",
        )
    return TASK_OF_COLUMN[given[0]]


def read_manifest(manifest: Path) -> tuple[Task, list[FolderRecord], list[str]]:
    """(task, records, class names) of a manifest; class names are sorted, caption manifests have none."""
    task = manifest_task(manifest)
    column = next(c for c, t in TASK_OF_COLUMN.items() if t == task)
    with open(manifest, newline="", encoding="utf-8-sig") as file:
        reader = csv.DictReader(file, delimiter=_delimiter(manifest))
        reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
        rows = list(enumerate(reader, start=2))
    if not rows:
        raise MetadataError(manifest, "has no rows: list one clip per line under the header")
    records, seen = [], {}
    for line, row in rows:
        value = (row.get("path") or "").strip()
        if not value:
            raise MetadataError(manifest, f"line {line}: empty 'path'")
        if value in seen:
            raise MetadataError(manifest, f"line {line}: {value!r} is listed twice (first on line {seen[value]})")
        seen[value] = line
        text = (row.get(column) or "").strip()
        names = [class_text(name) for name in text.split(";")] if task == "multilabel" else [class_text(text)]
        names = [name for name in names if name]
        if not names:
            raise MetadataError(manifest, f"line {line}: empty {column!r}")
        split = (row.get("split") or "").strip().lower() or None
        if split is not None and split not in SPLITS:
            raise MetadataError(manifest, f"line {line}: column 'split' must be one of {list(SPLITS)}, got {split!r}")
        fold = row.get("fold")
        records.append(
            FolderRecord(
                id=value,
                path=manifest.parent / value,
                caption=text if task == "caption" else "",
                labels=tuple(names) if task != "caption" else (),  # names for now, indices below
                fold=parse_int(manifest, line, "fold", fold, 0, 10**6) if fold not in (None, "") else None,
                split=split,
            )
        )
    names = sorted({name for record in records for name in record.labels})
    index = {name: i for i, name in enumerate(names)}
    for record in records:
        record.labels = tuple(sorted({index[name] for name in record.labels}))
    return task, records, names


def read_tree(root: Path) -> tuple[list[FolderRecord], list[str]]:
    """(records, class names) of a class-folder tree; one-line errors for an empty root or an empty class folder."""
    if not root.is_dir():
        raise DatasetNotFoundError(f"{root}: no such folder (expected root/<class name>/<audio files>)")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DatasetNotFoundError(
            f"{root}: no class folders; expected root/<class name>/**/*{{{','.join(AUDIO_SUFFIXES)}}}"
        )
    loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES]
    if loose:
        log.warning("%s: %d audio file(s) outside any class folder are not used", root, len(loose))
    names = [class_text(folder.name) for folder in folders]
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise MetadataError(root, f"class folders name the same class {duplicates} (underscores read as spaces)")
    records = []
    for target, folder in enumerate(folders):
        files = sorted(
            p for p in folder.rglob("*")
            if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )  # fmt: skip
        if not files:
            raise MetadataError(folder, f"class folder holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
        records += [FolderRecord(id=str(p.relative_to(root)), path=p, labels=(target,)) for p in files]
    return records, names
