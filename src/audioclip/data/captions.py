"""Clotho and AudioCaps, the audio captioning datasets of audio-text retrieval, in their official layouts.

Clotho v2.1 (Drossos et al. 2020, "Clotho: an Audio Captioning Dataset", ICASSP; Zenodo record 4783391): five
captions per clip, clips of 15 to 30 s at 44.1 kHz; the record's archives unpacked into the dataset root::

    clotho/clotho_captions_{development,validation,evaluation}.csv   file_name,caption_1,...,caption_5
    clotho/{development,validation,evaluation}/*.wav                the unpacked clotho_audio_<split>.7z

AudioCaps (Kim et al. 2019, "AudioCaps: Generating Captions for Audios in The Wild", NAACL; the CSVs of
github.com/cdjkim/audiocaps, ``dataset/``): AudioSet segments of 10 s from ``start_time``, one caption per training
clip and five per validation and test clip, one caption a row::

    audiocaps/{train,val,test}.csv (or audiocaps/dataset/*.csv)   audiocap_id,youtube_id,start_time,caption
    audiocaps/manifests/sources.*.jsonl, audiocaps/clips/*        the AudioSet downloader's (or ingest's) output

AudioCaps audio is YouTube's, so it comes through the AudioSet downloader (``audioclip captions fetch audiocaps``:
`audioclip.data.audioset`'s ``download``, or ``ingest`` for a copy you have); clips that are gone from YouTube are
left out and counted (every published AudioCaps figure is on the part its authors could still download).

Splits are the official ones (Clotho: development / validation / evaluation; AudioCaps: train / val / test) as
train / val / test. Each clip is one record whose target is its index; in training its text is one of its captions,
drawn per epoch by the item's seed, and evaluation scores every caption (``caption_texts``).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import av
import numpy as np

from audioclip.constants import SAMPLE_RATE
from audioclip.data.audio import round_to_int16
from audioclip.data.caption_names import CLOTHO_SPLITS, DATASETS, SPLITS
from audioclip.data.errors import BadFileError, DatasetNotFoundError, MetadataError
from audioclip.data.folder import AudioFolderDataModule, FolderRecord, decode_folder_clip
from audioclip.data.folds import ClipDataset
from audioclip.data.transforms import eval_audio_transform, train_audio_transform

log = logging.getLogger(__name__)

CLOTHO_CAPTIONS = tuple(f"caption_{k}" for k in range(1, 6))
AUDIOCAPS_COLUMNS = ("audiocap_id", "youtube_id", "start_time", "caption")
AUDIOCAPS_SECONDS = 10.0  # every AudioCaps clip is a 10 s AudioSet segment
# the longest clip kept in the cache: Clotho's are 15-30 s, so evaluation can take any centre crop of a whole clip
MAX_SECONDS = {"clotho": 30.0, "audiocaps": AUDIOCAPS_SECONDS}

# Clotho v2.1 for the dataset downloader: (file, URL, md5) per split. Zenodo record 4783391 lists each file's md5;
# transcribed from aac-datasets 0.7.0 (github.com/Labbeti/aac-datasets, src/aac_datasets/datasets/functional/
# clotho.py, _CLOTHO_LINKS["v2.1"]), which checks downloads against them. The metadata CSVs are not needed here.
CLOTHO_RECORD = "https://zenodo.org/record/4783391"
CLOTHO_FILES = {
    "train": (("clotho_audio_development.7z", "c8b05bc7acdb13895bb3c6a29608667e"),
              ("clotho_captions_development.csv", "d4090b39ce9f2491908eebf4d5b09bae")),
    "val": (("clotho_audio_validation.7z", "7dba730be08bada48bd15dc4e668df59"),
            ("clotho_captions_validation.csv", "5879e023032b22a2c930aaa0528bead4")),
    "test": (("clotho_audio_evaluation.7z", "4569624ccadf96223f19cb59fe4f849f"),
             ("clotho_captions_evaluation.csv", "1b16b9e57cf7bdb7f13a13802aeb57e2")),
}  # fmt: skip
# AudioCaps' CSVs, as the dataset's repository publishes them (github.com/cdjkim/audiocaps, dataset/)
AUDIOCAPS_CSV_URL = "https://raw.githubusercontent.com/cdjkim/audiocaps/master/dataset/{split}.csv"


def clotho_downloads(split: str) -> list[tuple[str, str, str]]:
    """(file name, URL, md5) of the Clotho v2.1 files of ``split`` (train, val or test)."""
    check_split(split)
    return [(name, f"{CLOTHO_RECORD}/files/{name}?download=1", md5) for name, md5 in CLOTHO_FILES[split]]


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return split


@dataclass(frozen=True)
class CaptionedClip:
    """One clip of Clotho or AudioCaps with all its captions."""

    id: str  # Clotho: the file name; AudioCaps: "{youtube_id}_{start_time}"
    path: Path
    captions: tuple[str, ...]
    split: str  # train, val or test
    offset: float = 0.0  # seconds into ``path`` where the clip starts (a whole downloaded video)


def _rows(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: caption file does not exist")
    with open(path, newline="", encoding="utf-8-sig") as file:
        reader = csv.DictReader(file)
        missing = [column for column in columns if column not in (reader.fieldnames or [])]
        if missing:
            raise MetadataError(
                path, f"missing column(s) {missing}; expected {list(columns)}, found {reader.fieldnames}"
            )
        rows = list(enumerate(reader, start=2))
    if not rows:
        raise MetadataError(path, "has no rows")
    return rows


def read_clotho(root: str | Path, split: str, audio: str | Path | None = None) -> list[CaptionedClip]:
    """The clips of a Clotho split with their five captions (``clotho_captions_<split>.csv``, audio in
    ``<split>/``, or in ``audio``); a missing audio file is found by the decoded cache and follows ``on_bad_file``."""
    root = Path(root)
    official = CLOTHO_SPLITS[check_split(split)]
    path = root / f"clotho_captions_{official}.csv"
    audio = Path(audio) if audio is not None else root / official
    if not audio.is_dir():
        raise DatasetNotFoundError(f"{audio}: Clotho audio folder does not exist (unpack clotho_audio_{official}.7z "
                                   f"from {CLOTHO_RECORD} into {root})")  # fmt: skip
    clips, seen = [], {}
    for line, row in _rows(path, ("file_name", *CLOTHO_CAPTIONS)):
        name = (row["file_name"] or "").strip()
        if not name:
            raise MetadataError(path, f"line {line}: empty 'file_name'")
        if name in seen:
            raise MetadataError(path, f"line {line}: {name!r} is listed twice (first on line {seen[name]})")
        seen[name] = line
        captions = tuple((row[column] or "").strip() for column in CLOTHO_CAPTIONS)
        if not all(captions):
            empty = [column for column, text in zip(CLOTHO_CAPTIONS, captions, strict=True) if not text]
            raise MetadataError(path, f"line {line}: empty {', '.join(empty)} for {name!r}")
        clips.append(CaptionedClip(id=name, path=audio / name, captions=captions, split=split))
    return clips


def audiocaps_csv(root: str | Path, split: str) -> Path:
    """The split's CSV: ``root/<split>.csv`` or, as in the AudioCaps repository, ``root/dataset/<split>.csv``."""
    root = Path(root)
    candidates = [root / f"{check_split(split)}.csv", root / "dataset" / f"{split}.csv"]
    found = next((path for path in candidates if path.is_file()), None)
    if found is None:
        raise DatasetNotFoundError(f"{candidates[0]}: AudioCaps caption file does not exist (nor dataset/{split}.csv); "
                                   f"get it from {AUDIOCAPS_CSV_URL.format(split=split)}")  # fmt: skip
    return found


@dataclass(frozen=True)
class AudioCapsSegment:
    """One AudioCaps clip as the AudioSet downloader wants it (``audioclip.data.audioset.Segment``'s fields)."""

    youtube_id: str
    start: float
    captions: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.youtube_id}_{self.start:g}"


def read_audiocaps_segments(root: str | Path, split: str) -> list[AudioCapsSegment]:
    """The clips of an AudioCaps split, each with its captions in ``audiocap_id`` order, in the CSV's order."""
    path = audiocaps_csv(root, split)
    grouped: dict[tuple[str, float], list[tuple[int, str]]] = {}
    for line, row in _rows(path, AUDIOCAPS_COLUMNS):
        youtube_id, caption = (row["youtube_id"] or "").strip(), (row["caption"] or "").strip()
        if len(youtube_id) != 11:
            raise MetadataError(
                path, f"line {line}: 'youtube_id' must be an 11-character YouTube id, got {youtube_id!r}"
            )
        try:
            start, number = float(row["start_time"]), int(row["audiocap_id"])
        except (TypeError, ValueError):
            raise MetadataError(path, f"line {line}: 'start_time' and 'audiocap_id' must be numbers, got "
                                      f"{row['start_time']!r} and {row['audiocap_id']!r}") from None  # fmt: skip
        if not caption:
            raise MetadataError(path, f"line {line}: empty 'caption'")
        grouped.setdefault((youtube_id, start), []).append((number, caption))
    return [AudioCapsSegment(ytid, start, tuple(text for _, text in sorted(rows))) for (ytid, start), rows in
            grouped.items()]  # fmt: skip


def audioset_segments(segments: list[AudioCapsSegment]) -> list:
    """The clips as AudioSet segments for ``audioclip.data.audioset.download`` / ``ingest``."""
    from audioclip.data.audioset import Segment

    return [Segment(s.youtube_id, s.start, s.start + AUDIOCAPS_SECONDS, ()) for s in segments]


def read_audiocaps(root: str | Path, split: str) -> tuple[list[CaptionedClip], list[str]]:
    """(the clips of an AudioCaps split whose audio the AudioSet downloader fetched or ingested, the ids of those it
    has not): ``root/manifests/sources.*.jsonl`` says where each clip lies and at which offset."""
    from audioclip.data.audioset.manifests import read_manifest

    root = Path(root)
    segments = read_audiocaps_segments(root, split)
    sources = read_manifest(root, "sources")
    clips, missing = [], []
    for segment in segments:
        source = sources.get(segment.youtube_id, {})
        if source.get("status") != "ok" or not Path(source.get("path", "")).is_file():
            missing.append(segment.id)
            continue
        clips.append(CaptionedClip(id=segment.id, path=Path(source["path"]), captions=segment.captions, split=split,
                                   offset=float(source.get("offset", 0.0))))  # fmt: skip
    if not clips:
        raise DatasetNotFoundError(
            f"{root}: none of the {len(segments)} AudioCaps {split} clips has audio here; fetch "
            f"them with `audioclip captions fetch audiocaps --root {root} --split {split}`"
        )
    return clips, missing


def decode_media_clip(path: Path, offsets: dict[str, float], channels: int, length: int) -> np.ndarray:
    """One clip as int16 (channels, <= length) at 44.1 kHz from ``offsets[str(path)]`` seconds into any file FFmpeg
    reads (a downloaded video, M4A, Opus, WAV)."""
    skip = round(offsets.get(str(path), 0.0) * SAMPLE_RATE)
    frames, decoded = [], 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise BadFileError(path, "holds no audio track")
            resampler = av.AudioResampler(format="fltp", layout="mono", rate=SAMPLE_RATE)
            for frame in container.decode(container.streams.audio[0]):
                frames += [out.to_ndarray() for out in resampler.resample(frame)]
                decoded = sum(piece.shape[1] for piece in frames)
                if decoded >= skip + length:  # a whole video: stop at the end of its segment
                    break
            frames += [out.to_ndarray() for out in resampler.resample(None)]
    except av.error.FFmpegError as error:
        raise BadFileError(path, f"not a readable audio or video file ({error})") from None
    audio = np.concatenate(frames, axis=1)[:, skip : skip + length] if frames else np.zeros((1, 0))
    if not audio.shape[1]:
        raise BadFileError(path, f"holds no audio after {skip / SAMPLE_RATE:g} s")
    # PyAV's float samples are in [-1, 1]: the int16 value range the model expects is 32768 times that
    return round_to_int16(np.repeat(audio * 32768.0, channels, axis=0))


class CaptionClipDataset(ClipDataset):
    """``ClipDataset`` whose training items carry one of the clip's captions, drawn by the item's seed."""

    def __init__(self, *args, captions: list[tuple[str, ...]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.captions_of = dict(zip(self.ids, captions, strict=True))

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        item = super().__getitem__(key)
        if isinstance(key, tuple):  # a training key (index, seed): a caption per epoch and clip
            choices = self.captions_of[item["id"]]  # the item's own clip, also when a bad one was replaced
            item["text"] = choices[key[1] % len(choices)]
        return item


class CaptionDataModule(AudioFolderDataModule):
    """Clotho or AudioCaps in the official layout and splits, as caption batches: fine-tuning on captions
    (``audioclip.tasks.FolderFinetuneModule``, its ``caption`` task) and retrieval (``audioclip evaluate query``).

    Args:
        dataset: ``clotho`` or ``audiocaps``.
        root: the dataset root (see the module docstring).
        splits: the official splits to read (default all three); evaluation reads only ``("test",)``.
        clip_seconds: the model's input length: a random crop in training, the centre at evaluation.
        max_seconds: the first seconds of every clip kept in the decoded cache (default: the dataset's longest clip).
        The others as ``AudioFolderDataModule`` (``batch_size``, ``num_workers``, ``channels``, ``on_bad_file``, ...).
    """

    def __init__(self, dataset: str, root: str | Path, splits: tuple[str, ...] = SPLITS, clip_seconds: float = 10.0,
                 max_seconds: float | None = None, **kwargs) -> None:  # fmt: skip
        if dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
        for split in splits:
            check_split(split)
        max_seconds = MAX_SECONDS[dataset] if max_seconds is None else max_seconds
        super().__init__(root=root, clip_seconds=clip_seconds, max_seconds=max_seconds, **kwargs)
        self.dataset = dataset
        self.dataset_name = {"clotho": "Clotho", "audiocaps": "AudioCaps"}[dataset]
        self.splits = tuple(splits)
        self.missing: list[str] = []  # AudioCaps clips without audio here
        self._clips: list[CaptionedClip] | None = None
        self.cache_spec = replace(self.cache_spec, name=f"{dataset}-{'-'.join(self.splits)}")

    @property
    def source(self) -> Path:
        return self.root

    @property
    def task(self) -> str:
        return "caption"

    def source_name(self) -> str:
        return f"{self.dataset_name} {self.root} ({', '.join(self.splits)})"

    def metadata_path(self) -> Path:
        if self.dataset == "clotho":
            return self.root / f"clotho_captions_{CLOTHO_SPLITS[self.splits[-1]]}.csv"
        return audiocaps_csv(self.root, self.splits[-1])

    def clips(self) -> list[CaptionedClip]:
        """Every clip of the chosen splits, in split order (AudioCaps: those with audio here)."""
        if self._clips is None:
            clips: list[CaptionedClip] = []
            for split in self.splits:
                if self.dataset == "clotho":
                    clips += read_clotho(self.root, split)
                else:
                    found, missing = read_audiocaps(self.root, split)
                    clips += found
                    self.missing += missing
            if self.missing:
                log.warning("%s: %d clip(s) have no audio here and are left out", self.source_name(), len(self.missing))
            self._clips = clips
        return self._clips

    def _read_layout(self):
        if self._read is None:
            clips = self.clips()
            spec = self.cache_spec
            if self.dataset == "audiocaps":  # any container FFmpeg reads; whole videos start at their segment
                offsets = {str(clip.path): clip.offset for clip in clips}
                decoder = partial(decode_media_clip, offsets=offsets, channels=spec.channels, length=spec.length)
            else:
                decoder = partial(decode_folder_clip, channels=spec.channels, length=spec.length)
            self.cache_spec = replace(spec, decoder=decoder)
            records = [FolderRecord(id=clip.id, path=clip.path, caption=clip.captions[0], split=clip.split,
                                    target=row) for row, clip in enumerate(clips)]  # fmt: skip
            self._read = "caption", records, []
        return self._read

    def caption_texts(self, target: int) -> tuple[str, ...]:
        """Every caption of the clip whose target is ``target``."""
        return self.clips()[target].captions

    def _load_cache(self) -> list[FolderRecord]:
        records = super()._load_cache()
        self.captions = [caption for clip in self.clips() for caption in clip.captions]
        return records

    def split(self, records: list[FolderRecord]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        splits = np.array([record.split for record in records])
        self.protocol = f"the official {self.dataset_name} splits"
        return tuple(np.flatnonzero(splits == name) for name in SPLITS)

    def check_splits(self, records, train: np.ndarray, val: np.ndarray) -> None:
        for name, rows in (("train", train), ("val", val)):
            if not len(rows):
                raise MetadataError(self.source, f"no usable {name} clips ({self.protocol}); read splits "
                                                 f"{list(self.splits)}: fine-tuning needs train and val")  # fmt: skip

    def transforms(self):
        return train_audio_transform(self.clip_length), eval_audio_transform(self.clip_length)

    def _dataset(self, rows: np.ndarray, transform) -> ClipDataset:
        chosen = [self._all_records[row] for row in rows]
        captions = [self.caption_texts(record.target) for record in chosen]
        return CaptionClipDataset(self._reader, rows, self._lengths[rows], chosen, self.texts(chosen), transform,
                                  self.on_bad_file, captions=captions)  # fmt: skip

    def evaluation_set(self, fold: int | None = None) -> ClipDataset:
        """Every usable clip of the test split (the evaluation split of Clotho, AudioCaps' test)."""
        if fold is not None:
            raise ValueError(f"{self.dataset_name} has no folds; it is evaluated on its official test split")
        records = self._load_cache()
        rows = np.flatnonzero(self._usable & (np.array([record.split for record in records]) == "test"))
        if not len(rows):
            raise MetadataError(self.source, f"no usable test clips (read splits {list(self.splits)})")
        return self._dataset(rows, self.transforms()[1])

    def folds_by_id(self) -> dict[str, int]:
        return {clip.id: 0 for clip in self.clips()}


# ------------------------------------------------------------------------------------------------ fetching
AUDIO_ONLY_FORMAT = "ba/b"  # audio is all AudioCaps needs: the best audio stream, else the smallest whole file


def fetch_audiocaps_csv(root: Path, split: str, url: str | None = None) -> Path:
    """The split's CSV, downloaded into ``root`` from the AudioCaps repository unless it is there already."""
    from urllib.request import urlopen

    try:
        return audiocaps_csv(root, split)
    except DatasetNotFoundError:
        pass
    url = url or AUDIOCAPS_CSV_URL.format(split=split)
    root.mkdir(parents=True, exist_ok=True)
    try:
        with urlopen(url, timeout=60) as response:
            text = response.read()
    except OSError as error:
        raise DatasetNotFoundError(f"{url}: could not download the AudioCaps {split} CSV ({error})") from None
    path = root / f"{split}.csv"
    path.write_bytes(text)
    return path


def fetch_audiocaps(
    root: str | Path, split: str, *, clips: str | Path | None = None, csv_url: str | None = None, **download: Any
) -> dict[str, int]:
    """Fetch (or, with ``clips``, ingest from a copy you have) the audio of an AudioCaps split through the AudioSet
    downloader, into ``root/clips`` with its record in ``root/manifests``; resumable like every AudioSet stage.
    ``download``: ``audioclip.data.audioset.download``'s options (``url_template``, ``sections``, ``workers``, ...).
    Returns the clips of the split, and how many have audio now."""
    from audioclip.data.audioset.download import download as download_segments
    from audioclip.data.audioset.ingest import ingest

    root = Path(root)
    fetch_audiocaps_csv(root, check_split(split), csv_url)
    segments = audioset_segments(read_audiocaps_segments(root, split))
    if clips is not None:
        ingest(segments, root, clips)
    else:
        download_segments(segments, root, **{"fmt": AUDIO_ONLY_FORMAT, **download})
    try:
        found = len(read_audiocaps(root, split)[0])
    except DatasetNotFoundError:
        found = 0
    return {"clips": len(segments), "with_audio": found}
