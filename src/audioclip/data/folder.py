"""Your own sounds: a class-folder tree or a CSV/TSV manifest as a DataModule of the batch contract.

Two layouts (docs/data.md, "Your own data"):

- a class-folder tree ``root/<class name>/**/*.{wav,flac,ogg,mp3}``: the class is the top folder's name, underscores
  read as spaces (as the ESC-50 / US8K class names are turned into text);
- a manifest (``.csv``, or ``.tsv`` tab-separated) with a ``path`` column (relative to the manifest's folder) and one
  of ``label`` (one class per clip), ``labels`` (several, ``;``-separated: multi-label) or ``caption`` (free text,
  the clip's own text for audio-text contrastive fine-tuning); optionally ``fold`` (integers) or ``split``
  (``train`` / ``val`` / ``test``).

Splits: with ``fold=k`` the ``fold`` column's fold k is the test split and a class-stratified ``val_fraction`` of
the other folds validates, as ESC-50's protocol (Piczak, 2015); else the ``split`` column (``val`` carved from
``train`` when it has none); else a seeded, class-stratified split of ``test_fraction`` / ``val_fraction`` per class
(the first label of a multi-label clip; captions unstratified).

Audio: any sample rate and channel count, resampled to 44.1 kHz (``torchaudio.functional.resample``) and brought to
``channels`` (1: the channel mean, as ESC-50; 2: mono duplicated, as UrbanSound8K) in the int16 value range AudioCLIP
expects (Guzhov et al., 2021; docs/design.md, "The model, exactly"). The decoded cache keeps the first ``max_seconds``
of every clip; training crops ``clip_seconds`` at random (with the paper's augmentations, section 4.2), evaluation
takes the centre ``clip_seconds`` (shorter clips are padded). Files are decoded by soundfile's libsndfile, which
reads WAV, FLAC, OGG/Vorbis and MP3. Bad files follow ``on_bad_file`` as for ESC-50.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch

from audioclip.constants import SAMPLE_RATE
from audioclip.data.audio import read_audio_int16_range, resample, round_to_int16
from audioclip.data.cache import CacheSpec
from audioclip.data.errors import MetadataError
from audioclip.data.folds import ClipDataset, FoldedAudioDataModule
from audioclip.data.layouts import SPLITS, FolderRecord, Task, manifest_task, read_manifest, read_tree
from audioclip.data.splits import split_folds, stratified_split
from audioclip.data.transforms import AudioTransform, eval_audio_transform, train_audio_transform


def decode_folder_clip(path: Path, channels: int, length: int) -> np.ndarray:
    """One clip as int16 (channels, <= length) at 44.1 kHz: the first ``length`` samples, channels mapped."""
    audio, sample_rate = read_audio_int16_range(path)
    # cut before resampling: an hour-long file is not resampled whole to keep its first seconds
    audio = audio[:, : int(np.ceil(length * sample_rate / SAMPLE_RATE)) + 64]
    audio = resample(audio, sample_rate)[:, :length]
    if audio.shape[0] != channels:
        audio = np.repeat(audio.mean(axis=0, keepdims=True), channels, axis=0)
    return round_to_int16(audio)


class AudioFolderDataModule(FoldedAudioDataModule):
    """A class-folder tree (``root``) or a CSV/TSV manifest (``manifest``) as dict batches.

    Args:
        root: a class-folder tree ``root/<class name>/**/*.{wav,flac,ogg,mp3}``.
        manifest: a ``.csv`` / ``.tsv`` with ``path`` and one of ``label``, ``labels``, ``caption`` (give ``root``
            or ``manifest``).
        fold: the ``fold`` column's test fold; without it the ``split`` column, else a seeded stratified split.
        test_fraction: share of every class in the test split of the seeded split.
        clip_seconds: the model's input length: a random crop in training, the centre at evaluation.
        max_seconds: the first seconds of every clip kept in the decoded cache (longer files are cut).
        channels: channels of every item: 1 (the channel mean) or 2 (mono duplicated; stereo kept).
        The others as ``FoldedAudioDataModule`` (``val_fraction``, ``seed``, ``on_bad_file``, ``cache_dir``, ...).
    """

    dataset_name = "audio folder"
    layout = None  # a class-folder tree or a manifest, read by `read_tree` / `read_manifest`
    num_folds = 0  # a manifest's folds are its own

    def __init__(
        self,
        root: str | Path | None = None,
        manifest: str | Path | None = None,
        fold: int | None = None,
        test_fraction: float = 0.2,
        clip_seconds: float = 5.0,
        max_seconds: float = 10.0,
        channels: int = 1,
        **kwargs,
    ) -> None:
        if (root is None) == (manifest is None):
            raise ValueError("give root (a class-folder tree) or manifest (a CSV/TSV file), one of the two")
        if root is not None and Path(root).is_file():
            raise ValueError(f"root: {root} is a file; pass a CSV/TSV manifest as manifest")
        val_fraction = kwargs.get("val_fraction", 0.1)
        if not 0.0 <= test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
            raise ValueError(f"test_fraction must be in [0, 1) with val_fraction + test_fraction < 1, got "
                             f"{test_fraction} and {val_fraction}")  # fmt: skip
        if not 0 < clip_seconds <= max_seconds:
            raise ValueError(f"clip_seconds must be in (0, max_seconds={max_seconds}], got {clip_seconds}")
        if channels not in (1, 2):
            raise ValueError(f"channels must be 1 or 2, got {channels}")
        self.manifest = Path(manifest) if manifest is not None else None
        # the protocol of own data is what its layout says (`split`), not a setting
        root = Path(root) if root is not None else self.manifest.parent
        super().__init__(root=root, fold=fold, protocol="honest", **kwargs)
        self.test_fraction = test_fraction
        self.clip_length = round(clip_seconds * SAMPLE_RATE)
        length = round(max_seconds * SAMPLE_RATE)
        # a tree and a manifest in one folder keep separate caches
        name = "folder" if self.manifest is None else f"manifest-{self.manifest.stem}"
        decoder = partial(decode_folder_clip, channels=channels, length=length)
        self.cache_spec = CacheSpec(name=name, decoder=decoder, channels=channels, length=length, version="1")
        self._read: tuple[Task, list[FolderRecord], list[str]] | None = None

    def _check_fold(self, fold: int | None) -> None:
        if fold is not None and fold < 0:
            raise ValueError(f"fold must be a fold number of the manifest's 'fold' column, got {fold}")

    @property
    def source(self) -> Path:
        """The tree root or the manifest file: what messages name."""
        return self.manifest if self.manifest is not None else self.root

    @property
    def task(self) -> Task:
        """``class``, ``multilabel`` or ``caption``: known from the layout before anything is decoded."""
        return "class" if self.manifest is None else manifest_task(self.manifest)

    def metadata_path(self) -> Path:
        return self.source

    def source_name(self) -> str:
        return f"{self.source} ({self.task} task)"

    def _read_layout(self) -> tuple[Task, list[FolderRecord], list[str]]:
        if self._read is None:
            if self.manifest is None:
                records, names = read_tree(self.root)
                task: Task = "class"
            else:
                task, records, names = read_manifest(self.manifest)
            captions = {caption: i for i, caption in enumerate(sorted({record.caption for record in records}))}
            for record in records:
                if task == "multilabel":
                    record.target = torch.zeros(len(names), dtype=torch.long)
                    record.target[list(record.labels)] = 1
                elif task == "caption":
                    # clips with one caption share a target: each is relevant to the other's caption in retrieval
                    record.target = captions[record.caption]
                else:
                    record.target = record.labels[0]
            self._read = task, records, names
        return self._read

    def _records(self) -> list[FolderRecord]:
        return self._read_layout()[1]

    def class_layout(self) -> tuple[list[FolderRecord], list[str]]:
        _, records, names = self._read_layout()
        return records, names

    def texts(self, records: list[FolderRecord]) -> list[str]:
        names = self.class_names
        return [record.caption or ", ".join(names[i] for i in record.labels) for record in records]

    def transforms(self) -> tuple[AudioTransform, AudioTransform]:
        return train_audio_transform(self.clip_length), eval_audio_transform(self.clip_length)

    def split(self, records: list[FolderRecord]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row indices (train, val, test); the protocol, in words, becomes ``protocol``."""
        strata = np.array([record.labels[0] if record.labels else 0 for record in records])
        if self.fold is not None:
            folds = [record.fold for record in records]
            if any(fold is None for fold in folds):
                where = "has no 'fold' column" if all(f is None for f in folds) else "has rows without a fold"
                raise MetadataError(self.source, f"{where}; fold={self.fold} needs a fold for every row")
            if self.fold not in folds:
                raise MetadataError(self.source, f"fold={self.fold} is not in the 'fold' column ({sorted(set(folds))})")
            self.protocol = f"fold {self.fold} as test split"
            return split_folds(np.array(folds), strata, self.fold, self.val_fraction, self.seed)
        splits = [record.split for record in records]
        if any(split is not None for split in splits):
            if None in splits:
                raise MetadataError(self.source, "column 'split' is empty on some rows; give train, val or test")
            rows = {name: np.flatnonzero(np.array(splits) == name) for name in SPLITS}
            for name in ("train", "test"):
                if not len(rows[name]):
                    raise MetadataError(self.source, f"no rows with split={name}")
            if not len(rows["val"]):
                part, val, _ = stratified_split(strata[rows["train"]], 0.0, self.val_fraction, self.seed)
                rows["train"], rows["val"] = rows["train"][part], rows["train"][val]
            self.protocol = "the manifest's split column"
            return rows["train"], rows["val"], rows["test"]
        self.protocol = (
            f"seeded stratified split (seed {self.seed}): test {self.test_fraction:.0%}, val {self.val_fraction:.0%}"
        )
        return stratified_split(strata, self.test_fraction, self.val_fraction, self.seed)

    def check_splits(self, records: list[FolderRecord], train: np.ndarray, val: np.ndarray) -> None:
        if self._read_layout()[0] != "caption":
            present = {label for row in train for label in records[row].labels}
            missing = [name for i, name in enumerate(self.class_names) if i not in present]
            if missing:
                raise MetadataError(
                    self.source,
                    f"class(es) {missing[:5]} have no usable sample in the training split ({self.protocol}); "
                    "add clips of them or change the split",
                )
        if not len(val):
            # without a validation split no checkpoint is selected: say so rather than test the last weights silently
            raise MetadataError(
                self.source, f"the validation split is empty ({self.protocol}, val_fraction={self.val_fraction} of "
                f"{len(train)} training clips); raise val_fraction or give rows with split=val",
            )

    def _load_cache(self) -> list[FolderRecord]:
        records = super()._load_cache()
        task = self._read_layout()[0]
        self.captions = sorted({record.caption for record in records}) if task == "caption" else []
        return records

    def caption_texts(self, target: int) -> tuple[str, ...]:
        """The captions of a caption task's clip whose target is ``target``: its one caption."""
        return (self.captions[target],)

    def evaluation_set(self, fold: int | None = None) -> ClipDataset:
        """Every usable clip (or those of ``fold``) with the evaluation transform, for zero-shot and querying; the
        training split is not involved, so no class needs training samples here."""
        records = self._load_cache()
        rows = np.flatnonzero(self._usable)
        if fold is not None:
            folds = np.array([record.fold if record.fold is not None else -1 for record in records])
            if fold not in folds:
                raise MetadataError(self.source, f"fold={fold} is not in the 'fold' column")
            rows = rows[folds[rows] == fold]
        return self._dataset(rows, self.transforms()[1])

    def folds_by_id(self) -> dict[str, int]:
        """The ``fold`` of every clip by id (0 where the layout has none)."""
        return {record.id: record.fold or 0 for record in self._records()}
