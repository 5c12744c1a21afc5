"""Readers for the official AudioSet metadata files.

References: Gemmeke et al., "Audio Set: An ontology and human-labeled dataset for audio events" (ICASSP 2017);
the file formats of research.google.com/audioset/download.html and github.com/audioset/ontology:

- ``class_labels_indices.csv``: header ``index,mid,display_name``, 527 rows, display names quoted;
- ``eval_segments.csv`` / ``balanced_train_segments.csv`` / ``unbalanced_train_segments.csv``: ``#`` comment
  lines, then ``YTID, start_seconds, end_seconds, "mid,mid,..."`` (fields separated by ", ");
- ``ontology.json``: a list of entries with ``id``, ``name``, ``child_ids``, ...
"""

from __future__ import annotations

import csv
import json
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from audioclip.constants import AUDIOSET_CLASSES

NUM_CLASSES = AUDIOSET_CLASSES  # the public name of `audioclip.data.audioset`
NUM_FRAMES = 10  # paper sec. 4.1: ten equally spaced frames per clip
DEFAULT_LABELS = Path(__file__).with_name("class_labels_indices.csv")  # a copy of the official file


@dataclass(frozen=True)
class AudioSetClass:
    index: int  # column in the 527-way multi-hot target
    mid: str  # Freebase machine id, e.g. "/m/09x0r"
    display_name: str  # human-readable name, used as the text of the class


@dataclass(frozen=True)
class Segment:
    ytid: str  # YouTube video id (11 characters)
    start: float  # segment start in the video, seconds
    end: float  # segment end in the video, seconds
    mids: tuple[str, ...]  # positive labels as Freebase mids

    @property
    def duration(self) -> float:
        return self.end - self.start


def read_class_labels(path: str | Path) -> list[AudioSetClass]:
    """Read ``class_labels_indices.csv``; the returned list is ordered by index (0..526)."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != ["index", "mid", "display_name"]:
            raise ValueError(f"{path}: expected header 'index,mid,display_name', got {reader.fieldnames}")
        classes = [AudioSetClass(int(row["index"]), row["mid"], row["display_name"]) for row in reader]
    if [c.index for c in classes] != list(range(len(classes))):
        raise ValueError(f"{path}: class indices must run 0..{len(classes) - 1} in order")
    return classes


def read_segments(path: str | Path) -> list[Segment]:
    """Read a segment list; ``#`` lines are comments, every other line is ``YTID, start, end, "mid,..."``."""
    path = Path(path)
    segments: list[Segment] = []
    with path.open(newline="", encoding="utf-8") as f:
        rows = csv.reader((line for line in f if not line.startswith("#")), skipinitialspace=True)
        for line_no, row in enumerate(rows, start=1):
            if not row:
                continue
            if len(row) != 4:
                raise ValueError(f"{path}: data row {line_no} has {len(row)} fields, expected 4: {row}")
            ytid, start, end, mids = row
            try:
                segment = Segment(ytid, float(start), float(end), tuple(m for m in mids.split(",") if m))
            except ValueError as e:
                raise ValueError(f"{path}: data row {line_no} ({ytid}) has a bad time: {e}") from None
            if segment.end <= segment.start:
                raise ValueError(f"{path}: data row {line_no} ({ytid}) ends before it starts")
            segments.append(segment)
    return segments


def read_ontology(path: str | Path) -> dict[str, dict]:
    """Read ``ontology.json`` into a dict mid -> entry (keys id, name, description, child_ids, ...)."""
    path = Path(path)
    entries = json.loads(path.read_text(encoding="utf-8"))
    ontology = {entry["id"]: entry for entry in entries}
    for entry in entries:
        for child in entry["child_ids"]:
            if child not in ontology:
                raise ValueError(f"{path}: entry {entry['id']} names an unknown child {child}")
    return ontology


def label_indices(segment: Segment, classes: Sequence[AudioSetClass]) -> list[int]:
    """The sorted class indices of a segment's labels; an unknown mid is an error naming the YTID."""
    by_mid = {c.mid: c.index for c in classes}
    try:
        return sorted(by_mid[m] for m in segment.mids)
    except KeyError as e:
        raise ValueError(f"segment {segment.ytid}: label {e.args[0]} is not in class_labels_indices.csv") from None


def shard_of(ytid: str, num_shards: int) -> int:
    """A stable shard number for a YTID (crc32, not Python's salted ``hash``), so machines agree on the split."""
    return zlib.crc32(ytid.encode()) % num_shards


def parse_shard(spec: str) -> tuple[int, int]:
    """Parse ``--shard i/n`` (0 <= i < n)."""
    try:
        index, count = (int(x) for x in spec.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {spec!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard {spec}: need 0 <= i < n")
    return index, count


def select_shard(segments: Iterable[Segment], shard: tuple[int, int] = (0, 1)) -> list[Segment]:
    index, count = shard
    return [s for s in segments if shard_of(s.ytid, count) == index]
