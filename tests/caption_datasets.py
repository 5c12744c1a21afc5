"""Tiny Clotho and AudioCaps trees in their official layouts (audioclip.data.captions), marked synthetic.

Clip k of a tree is a tone whose pitch identifies k (audioclip.data.synthetic.class_sound), so the clips differ; each
has five captions of its own ("clip 3 of test, caption 2: a tone"), the Clotho ones 1.5 to 2.5 s long at 44.1 kHz,
the AudioCaps ones 16 kHz WAVs named as AudioSet's downloader and ingest expect ({youtube_id}_{start}.wav).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf

from audioclip.data.captions import CLOTHO_CAPTIONS, CLOTHO_SPLITS
from audioclip.data.provenance import mark_synthetic
from audioclip.data.synthetic import class_sound

CLOTHO_SIZES = {"train": 4, "val": 2, "test": 3}


def tone(index: int, count: int, seconds: float, rate: int) -> np.ndarray:
    return (0.5 * class_sound(index, count, seconds, rate, np.random.default_rng(index))).astype(np.float32)


def captions_of(split: str, clip: int) -> list[str]:
    return [f"clip {clip} of {split}, caption {k}: a tone" for k in range(1, 6)]


def write_clotho(root: Path, sizes: dict[str, int] = CLOTHO_SIZES) -> Path:
    """clotho_captions_<split>.csv and <split>/*.wav for the splits in ``sizes`` (clips per split)."""
    total = sum(sizes.values())
    number = 0
    for split, count in sizes.items():
        official = CLOTHO_SPLITS[split]
        (root / official).mkdir(parents=True)
        with open(root / f"clotho_captions_{official}.csv", "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["file_name", *CLOTHO_CAPTIONS])
            for clip in range(count):
                name = f"{official} sound {clip}.wav"  # real Clotho file names hold spaces
                sf.write(root / official / name, tone(number, total, 1.5 + clip % 3 * 0.5, 44100), 44100)
                writer.writerow([name, *captions_of(split, clip)])
                number += 1
    mark_synthetic(root, "tests/caption_datasets.py")
    return root


def audiocaps_id(clip: int) -> str:
    return f"tiny{clip:07d}"  # 11 characters, as YouTube ids


def write_audiocaps_csv(root: Path, split: str, clips: int | range, start: int = 30) -> Path:
    """``root/<split>.csv``: five captions per clip (AudioCaps' val and test), one row each, audiocap ids shuffled;
    ``clips`` a count or the clip numbers (the splits of a dataset hold different clips)."""
    root.mkdir(parents=True, exist_ok=True)
    numbers = range(clips) if isinstance(clips, int) else clips
    rows = [(1000 + 7 * clip + k, audiocaps_id(clip), start, text)
            for clip in numbers for k, text in enumerate(captions_of(split, clip))]  # fmt: skip
    with open(root / f"{split}.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["audiocap_id", "youtube_id", "start_time", "caption"])
        writer.writerows(rows[::-1])  # the reader orders a clip's captions by audiocap_id, not by row
    return root / f"{split}.csv"


def write_audiocaps_copy(folder: Path, clips: range, start: int = 30, seconds: float = 2.0) -> Path:
    """A local copy of AudioCaps clips as `audioclip captions fetch --clips` ingests them."""
    folder.mkdir(parents=True, exist_ok=True)
    for clip in clips:
        sf.write(folder / f"{audiocaps_id(clip)}_{start}.wav", tone(clip, 8, seconds, 16000), 16000)
    mark_synthetic(folder, "tests/caption_datasets.py")
    return folder
