"""The fold-based DataModules' base: metadata rows, the official folds, the splits, a decoded-cache DataModule.

The fold protocol follows the datasets' papers (ESC-50: Piczak, 2015; UrbanSound8K: Salamon et al., 2014): the
chosen fold is the test split, and the validation split used for checkpoint selection is carved, stratified by
class, from the remaining training folds (docs/design.md, "Honest protocol"; ``protocol="honest"``).
``protocol="reference"`` is the released AudioCLIP trainer's: every non-test fold trains and the checkpoint is
selected on the test fold, which is how the paper's fine-tuned figures were obtained, so it is there to compare
like with like, never the default. Items follow the batch contract (`audioclip.data.batch`); bad files follow
the `on_bad_file` policy (`audioclip.data.errors`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from audioclip.data.batch import collate, per_device_batch_size
from audioclip.data.cache import CACHE_DIRNAME, CacheReader, CacheSpec, ClipCache, build_cache
from audioclip.data.errors import (
    BadFileError,
    DatasetNotFoundError,
    MissingFileError,
    OnBadFile,
    check_on_bad_file,
    clip_problem,
    first_usable,
)
from audioclip.data.layouts import ClipRecord, FoldLayout, class_names
from audioclip.data.samplers import EvalShardSampler, ResumableDataLoader, ResumableSampler
from audioclip.data.splits import split_folds
from audioclip.data.transforms import AudioTransform, eval_audio_transform, train_audio_transform
from audioclip.data.workers import IgnoreTerminationSignals, worker_context

log = logging.getLogger(__name__)

Protocol = Literal["honest", "reference"]
PROTOCOLS = ("honest", "reference")


class ClipDataset(Dataset):
    """Items of the batch contract read lazily from the decoded cache.

    A key is an index, or ``(index, seed)`` from ``ResumableSampler``: the seed drives the item's augmentation.
    A clip that cannot be read, or reads as NaN/Inf, silence or the wrong length, raises ``BadFileError``
    (``on_bad_file="error"``) or is replaced by the next good clip, its problem listed in the item's ``skipped``.
    """

    def __init__(
        self,
        reader: CacheReader,
        rows: np.ndarray,
        lengths: np.ndarray,
        records: Sequence[ClipRecord],
        texts: Sequence[str],
        transform: AudioTransform,
        on_bad_file: OnBadFile = "error",
    ) -> None:
        self.reader = reader
        self.rows = rows
        self.lengths = lengths
        self.targets = [record.target for record in records]
        self.ids = [record.id for record in records]
        self.paths = [record.path for record in records]
        self.texts = list(texts)
        self.transform = transform
        self.on_bad_file = on_bad_file

    def __len__(self) -> int:
        return len(self.rows)

    def _read(self, index: int) -> torch.Tensor:
        length = int(self.lengths[index])
        try:
            audio = self.reader.read(int(self.rows[index]), length) if 0 < length <= self.reader.length else None
        except OSError as error:
            raise BadFileError(self.paths[index], f"could not be read from the decoded cache ({error})") from None
        audio = torch.from_numpy(audio.astype(np.float32)) if audio is not None else torch.zeros(0)
        if problem := clip_problem(audio, length, self.reader.length):
            raise BadFileError(self.paths[index], problem)
        return audio

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = key if isinstance(key, tuple) else (key, None)

        def load(offset: int) -> dict[str, Any]:
            candidate = (index + offset) % len(self)
            audio = self._read(candidate)
            generator = torch.Generator().manual_seed(seed) if seed is not None else None
            return {
                "audio": self.transform(audio, generator),
                "target": self.targets[candidate],
                "text": self.texts[candidate],
                "id": self.ids[candidate],
            }

        return first_usable(load, len(self), self.on_bad_file, self.paths[index])


class FoldedAudioDataModule(L.LightningDataModule):
    """Base of the ESC-50 and UrbanSound8K DataModules: official folds, a decoded cache, dict batches.

    Args:
        root: the dataset root in its official layout (see ``data/README.md``).
        fold: the test fold; the other folds train.
        batch_size: the global batch size, divided by the DDP world size.
        num_workers: DataLoader worker processes.
        val_fraction: share of every class in the training folds held out for validation (``honest`` only).
        seed: seed of the validation split.
        protocol: ``"honest"`` selects checkpoints on the validation split carved from the training folds;
            ``"reference"`` trains on every non-test fold and validates on the test fold, as the released
            AudioCLIP trainer does (the paper's fine-tuned figures); results record which one ran.
        augment: apply the paper's train-time augmentations to the training split.
        pin_memory: DataLoader ``pin_memory``; default: on when CUDA is available (faster host-to-GPU copies).
        persistent_workers: keep workers alive between epochs (only with ``num_workers > 0``); on by default, as an
            ESC-50 epoch is ~22 steps and restarting workers every epoch costs seconds each time.
        on_bad_file: ``"error"`` stops at the first bad file; ``"skip"`` leaves bad files out and logs them.
        cache_dir: where the decoded cache lives; defaults to ``root/.audioclip-cache``.
        progress: show a progress bar while the cache is built.
    """

    dataset_name: ClassVar[str]  # for messages, e.g. "ESC-50"
    layout: ClassVar[FoldLayout | None]  # the official layout; None for a layout read otherwise (own data)
    num_folds: ClassVar[int]  # the official folds (0: none)
    cache_spec: ClassVar[CacheSpec]

    def __init__(
        self,
        root: str | Path,
        fold: int = 1,
        batch_size: int = 64,
        num_workers: int = 2,
        val_fraction: float = 0.1,
        seed: int = 0,
        augment: bool = True,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        on_bad_file: OnBadFile = "error",
        cache_dir: str | Path | None = None,
        progress: bool = True,
        protocol: Protocol = "honest",
    ) -> None:
        super().__init__()
        self._check_fold(fold)
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        check_on_bad_file(on_bad_file)
        per_device_batch_size(batch_size, 1)
        self.save_hyperparameters()
        self.root = Path(root)
        self.fold = fold
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.seed = seed
        self.augment = augment
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.on_bad_file = on_bad_file
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.root / CACHE_DIRNAME
        self.progress = progress
        self.protocol = protocol
        self.skipped_files: list[str] = []
        self.class_names: list[str] = []
        self.device_batch_size = batch_size
        self.train_set: ClipDataset | None = None
        self.val_set: ClipDataset | None = None
        self.test_set: ClipDataset | None = None

    def _check_fold(self, fold: int | None) -> None:
        if fold is None or not 1 <= fold <= self.num_folds:
            raise ValueError(
                f"fold must be in 1..{self.num_folds} ({self.dataset_name} has {self.num_folds} official folds), "
                f"got {fold}"
            )

    def metadata_path(self) -> Path:
        return self.root / self.layout.metadata

    def audio_dir(self) -> Path:
        return self.root / "audio"

    def read_records(self) -> list[ClipRecord]:
        return self.layout.read(self.root)

    def _records(self) -> list[ClipRecord]:
        if not self.root.is_dir():
            raise DatasetNotFoundError(
                f"{self.root}: {self.dataset_name} root does not exist (expected layout: see data/README.md)"
            )
        if not self.audio_dir().is_dir():
            raise DatasetNotFoundError(f"{self.audio_dir()}: {self.dataset_name} audio folder does not exist")
        return self.read_records()

    def _cache(self, records: Sequence[ClipRecord]) -> ClipCache:
        return build_cache(
            self.cache_dir, self.cache_spec, [r.id for r in records], [r.path for r in records], self.progress
        )

    def _bad_files(self, records: Sequence[ClipRecord], cache: ClipCache) -> list[tuple[ClipRecord, str]]:
        """Bad files with their problems; raises on the first one unless ``on_bad_file="skip"``."""
        bad = [(record, error) for record, error in zip(records, cache.errors, strict=True) if error is not None]
        if bad and self.on_bad_file == "error":
            record, problem = bad[0]
            more = f" ({len(bad) - 1} more bad file(s) in {self.dataset_name})" if len(bad) > 1 else ""
            hint = "; fix or remove them, or pass on_bad_file='skip'"
            error_type = MissingFileError if not record.path.exists() else BadFileError
            raise error_type(record.path, f"{problem}{more}{hint}")
        return bad

    def output_dirs(self) -> dict[Path, str]:
        """Folders this DataModule writes, each with the setting that moves it: the decoded cache (a read-only
        dataset root needs `cache_dir`). `audioclip fit` checks them before anything is decoded."""
        return {self.cache_dir: "--data.init_args.cache_dir (default: <root>/.audioclip-cache)"}

    def prepare_data(self) -> None:
        """Decode new or changed files into the cache (once per node) and fail on bad files before training."""
        records = self._records()
        self._bad_files(records, self._cache(records))

    # ---- what a dataset says about itself: records and class names, the splits, the text and the transforms -----
    def class_layout(self) -> tuple[list[ClipRecord], list[str]]:
        """The metadata's records and class names, read without decoding anything."""
        records = self._records()
        return records, class_names(records, self.metadata_path())

    def declared_class_names(self) -> list[str]:
        """The class names, from the metadata alone (`audioclip fit`'s pre-flight compares them with the model)."""
        return self.class_layout()[1]

    def split(self, records: Sequence[ClipRecord]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row indices (train, val, test): the test fold, and a class-stratified validation share of the others
        (`protocol="reference"`: the other folds train, the test fold validates)."""
        folds = np.array([record.fold for record in records])
        targets = np.array([record.target for record in records])
        train, val, test = split_folds(folds, targets, self.fold, self.val_fraction, self.seed)
        if self.protocol == "reference":
            train, val = np.sort(np.concatenate([train, val])), test
        return train, val, test

    def source_name(self) -> str:
        """What log lines call this dataset."""
        return self.dataset_name

    def check_splits(self, records: Sequence[ClipRecord], train: np.ndarray, val: np.ndarray) -> None:
        """A dataset whose splits can come out unusable says so here (the official folds cannot)."""

    def texts(self, records: Sequence[ClipRecord]) -> list[str]:
        """Each clip's text: its class name."""
        return [self.class_names[record.target] for record in records]

    def transforms(self) -> tuple[AudioTransform, AudioTransform]:
        """(training, evaluation) transforms: the paper's augmentations, and the centre crop."""
        length = self.cache_spec.length
        return train_audio_transform(length), eval_audio_transform(length)

    # ---- the shared machinery ---------------------------------------------------------------------------------
    def _load_cache(self) -> list[ClipRecord]:
        """Read the layout, decode what is new into the cache, apply ``on_bad_file``; the records."""
        records, self.class_names = self.class_layout()
        # A warm cache makes this a check of file sizes and mtimes; it also builds the cache when
        # setup is used without prepare_data (a notebook, a test).
        cache = self._cache(records)
        bad = self._bad_files(records, cache)
        if bad:
            self.skipped_files = [record.id for record, _ in bad]
            log.warning("%s: skipped %d bad file(s) (on_bad_file='skip'): %s", self.source_name(), len(bad),
                        "; ".join(f"{record.path}: {problem}" for record, problem in bad))  # fmt: skip
        self._all_records, self._reader, self._lengths = records, CacheReader(cache), cache.lengths
        self._usable = np.array([error is None for error in cache.errors])
        return records

    def _dataset(self, rows: np.ndarray, transform: AudioTransform) -> ClipDataset:
        chosen = [self._all_records[row] for row in rows]
        return ClipDataset(self._reader, rows, self._lengths[rows], chosen, self.texts(chosen), transform,
                           self.on_bad_file)  # fmt: skip

    def setup(self, stage: str | None = None) -> None:
        world_size = self.trainer.world_size if self.trainer is not None else 1
        self.device_batch_size = per_device_batch_size(self.batch_size, world_size)
        if self.train_set is not None:
            return
        records = self._load_cache()
        # split before dropping bad files so that skipping a file never reshuffles the splits
        train, val, test = (rows[self._usable[rows]] for rows in self.split(records))
        self.check_splits(records, train, val)
        log.info("%s: %d train / %d val / %d test clips (%s)", self.source_name(), len(train), len(val), len(test),
                 self.protocol)  # fmt: skip
        train_transform, eval_transform = self.transforms()
        self.train_set = self._dataset(train, train_transform if self.augment else eval_transform)
        self.val_set = self._dataset(val, eval_transform)
        self.test_set = self._dataset(test, eval_transform)

    def _loader(
        self,
        dataset: ClipDataset | None,
        sampler: ResumableSampler | None = None,
        eval_sampler: EvalShardSampler | None = None,
    ) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before the dataloaders are requested")
        if sampler is None:
            loader = partial(DataLoader, sampler=eval_sampler)
        else:
            loader = partial(ResumableDataLoader, sampler=sampler)
        pin_memory = torch.cuda.is_available() if self.pin_memory is None else self.pin_memory
        return loader(
            dataset,
            batch_size=self.device_batch_size,
            num_workers=self.num_workers,
            collate_fn=collate,
            pin_memory=pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            multiprocessing_context=worker_context(self.num_workers),
            # a signal to the process group is the main process's to act on (save, then stop the workers)
            worker_init_fn=IgnoreTerminationSignals(rank=getattr(self.trainer, "global_rank", 0)),
            # training drops the last incomplete batch: a contrastive loss over a handful of rows is a poor
            # signal, and every rank must gather batches of one size; evaluation sees every clip
            drop_last=sampler is not None,
        )

    def train_dataloader(self) -> ResumableDataLoader:
        """Shuffled, resumable mid-epoch; the order follows ``seed_everything`` (``PL_GLOBAL_SEED``) like Lightning's
        own DistributedSampler, split over the DDP ranks here so that Lightning keeps the sampler."""
        sampler = None
        if self.train_set is not None:
            sampler = ResumableSampler(
                self.train_set,
                num_replicas=getattr(self.trainer, "world_size", 1),
                rank=getattr(self.trainer, "global_rank", 0),
                seed=int(os.environ.get("PL_GLOBAL_SEED", 0)),
            )
        return self._loader(self.train_set, sampler)

    def _eval_sampler(self, dataset: ClipDataset | None) -> EvalShardSampler | None:
        world = getattr(self.trainer, "world_size", 1)
        if dataset is None or world == 1:
            return None
        return EvalShardSampler(dataset, num_replicas=world, rank=self.trainer.global_rank)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, eval_sampler=self._eval_sampler(self.val_set))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, eval_sampler=self._eval_sampler(self.test_set))
