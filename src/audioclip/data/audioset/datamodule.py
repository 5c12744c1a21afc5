"""The AudioSet DataModule: streams the shards written by ``prepare pack`` into batches of the batch contract.

Paper (Guzhov et al. 2021, sec. 4.1-4.3): audio, one of ten equally spaced frames (random in training, the central
one in evaluation) and the class names as text. Items follow docs/design.md, "The batch contract": ``audio`` (C, 441000)
at 44.1 kHz in the int16 range, ``image`` (3, 224, 224) CLIP-preprocessed, ``text`` the display names joined with
", ", ``target`` a 527-way multi-hot, ``id`` the YTID.

Channels: the ESResNeXt-fbsp body runs every audio channel separately and sums the features, so a batch needs one
channel count. ``channels=1`` (default) averages stereo to mono, as a mono clip has always been; ``channels=2``
duplicates mono clips. Streaming, global shuffling, the split across DDP ranks / nodes / loader workers and the
mid-epoch resume state come from LitData's ``StreamingDataset`` / ``StreamingDataLoader``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import soundfile as sf
import torch
from litdata import CombinedStreamingDataset, StreamingDataLoader, StreamingDataset
from litdata.streaming.sampler import ChunkedIndex
from litdata.utilities.env import _WorkerEnv
from PIL import Image, UnidentifiedImageError

from audioclip.constants import AUDIOSET_CLASSES, SAMPLE_RATE
from audioclip.data.audioset.batch_augment import augment_batch
from audioclip.data.audioset.metadata import DEFAULT_LABELS, NUM_FRAMES, read_class_labels
from audioclip.data.audioset.mixup import batch_seed, mixup_batch
from audioclip.data.audioset.parts import TIERS, join, read_json
from audioclip.data.audioset.plain_http_s3 import use_boto3_for_plain_http
from audioclip.data.batch import collate, per_device_batch_size
from audioclip.data.errors import BadFileError, check_on_bad_file, clip_problem, first_usable
from audioclip.data.transforms import eval_audio_transform, train_audio_transform
from audioclip.data.workers import IgnoreTerminationSignals, worker_context
from audioclip.models.preprocess import image_transform
from audioclip.process_group import rank_and_world

# Ten frames sit at the centres of ten equal intervals (prepare.frame_times), so none is at the exact middle;
# frame 5 (55 % of the clip) is the one Python's ``len // 2`` convention calls central.
CENTRAL_FRAME = NUM_FRAMES // 2
MAX_SAMPLES = 60 * SAMPLE_RATE  # AudioSet segments are 10 s; anything over a minute is not a segment


def class_names(shard_dir: str | Path | None = None) -> list[str]:
    """The 527 display names in index order: the shard directory's copy when it has one, else the bundled CSV."""
    names = read_json(join(shard_dir, "class_names.json")) if shard_dir is not None else None
    return names if names is not None else [c.display_name for c in read_class_labels(DEFAULT_LABELS)]


class AudioSetStreamingDataset(StreamingDataset):
    """Decodes one shard sample into an item of the batch contract."""

    def __init__(
        self,
        input_dir: str,
        *,
        train: bool,
        channels: int,
        clip_seconds: float,
        names: list[str],
        seed: int = 42,
        cache_dir: str | None = None,
        max_cache_size: str = "100GB",
        on_bad_file: str = "error",
        frames: bool = True,
        device_augment: bool = False,
    ) -> None:
        check_on_bad_file(on_bad_file)
        self.on_bad_file = on_bad_file
        self.frames = frames
        self.device_augment = device_augment and train
        if channels not in (1, 2):
            raise ValueError(f"channels must be 1 (stereo averaged) or 2 (mono duplicated), got {channels}")
        if str(input_dir).startswith("s3://"):
            use_boto3_for_plain_http()  # the endpoint may have been set after this module was imported
        super().__init__(
            input_dir,
            shuffle=train,
            drop_last=train,  # equal batch counts on every rank in training; evaluation sees every clip
            seed=seed,
            cache_dir=cache_dir,
            max_cache_size=max_cache_size,
        )
        self.train = train
        self.channels = channels
        self.names = names
        length = round(clip_seconds * SAMPLE_RATE)
        self.length = length
        self.audio_transform = train_audio_transform(length) if train else eval_audio_transform(length)
        self.image_transform: Callable = image_transform(224)

    def __getitem__(self, index: Any) -> dict[str, Any]:
        """A bad sample (audio or frame that does not decode, NaN/Inf, silence, no samples) raises `BadFileError`
        naming its YTID, or under `on_bad_file="skip"` is replaced by the next good sample and listed in the
        item's `skipped` (reported by `tasks.callbacks.BadDataLog`)."""
        own = self._own_indices(index)
        position = own.index(index if isinstance(index, int) else index.index)

        def load(offset: int) -> dict[str, Any]:
            if offset == 0:
                key = index
            elif isinstance(index, int):
                key = own[(position + offset) % len(own)]
            else:
                key = ChunkedIndex(index=own[(position + offset) % len(own)], chunk_index=index.chunk_index)
            return self._decode(super(AudioSetStreamingDataset, self).__getitem__(key))

        return first_usable(load, len(own), self.on_bad_file, self.input_dir.path or str(self.input_dir.url))

    def _own_indices(self, index: Any) -> list[int] | range:
        """The samples a replacement for ``index`` may come from: while iterating, those of the chunk interval this
        rank's loader worker is reading now, so that a rank never takes another rank's samples (and no chunk
        is fetched for a replacement); on random access (an ``int``), every sample."""
        if not isinstance(index, int):
            current = self.worker_next_chunk_index - 1
            if self._elastic_item_lists is not None and 0 <= current < len(self._elastic_item_lists):
                own: list[int] | range = [int(i) for i in self._elastic_item_lists[current]]  # resumed elastically
            elif 0 <= current < len(self.worker_intervals):
                _, start, end, _ = self.worker_intervals[current]
                own = range(start, end)
            else:
                own = range(0)
            if index.index in own:
                return own
        if self.cache is None:  # random access before any iteration: open the chunk index as LitData does
            self.worker_env = _WorkerEnv.detect()
            self.cache = self._create_cache(worker_env=self.worker_env)
            self.shuffler = self._create_shuffler(self.cache)
        return range(len(self.cache))

    def _decode(self, sample: dict[str, Any]) -> dict[str, Any]:
        ytid = sample["ytid"]
        where = f"AudioSet shard sample {ytid}"
        try:
            if sample["audio"][:6] == b"\x93NUMPY":  # packed with --audio-format npy: raw int16 (samples, channels)
                pcm = np.load(io.BytesIO(sample["audio"]), allow_pickle=False)
            else:
                pcm, _ = sf.read(io.BytesIO(sample["audio"]), dtype="int16", always_2d=True)
        except (sf.LibsndfileError, ValueError, OSError) as e:
            raise BadFileError(where, f"audio does not decode ({e})") from None
        audio = torch.from_numpy(pcm.T.astype(np.float32))  # int16 value range, as the model expects
        problem = clip_problem(audio, audio.shape[-1], MAX_SAMPLES)
        if problem:
            raise BadFileError(where, problem)
        if self.channels == 1 and audio.shape[0] > 1:
            audio = audio.mean(dim=0, keepdim=True)
        elif self.channels == 2 and audio.shape[0] == 1:
            audio = audio.expand(2, -1)
        labels = sample["labels"].astype(np.int64)
        target = torch.zeros(AUDIOSET_CLASSES)
        target[torch.from_numpy(labels)] = 1.0
        item = {"text": ", ".join(self.names[i] for i in labels), "target": target, "id": ytid}
        if self.device_augment:
            # int16 out of the worker (a stereo mean rounds by at most 0.5), the clip's first `length` samples
            # zero-padded to one shape; batch_augment.augment_batch does the rest on the device
            valid = min(audio.shape[-1], self.length)
            item["audio"] = torch.zeros(audio.shape[0], self.length, dtype=torch.int16)
            item["audio"][:, :valid] = audio[:, :valid].round()
            item["audio_length"] = valid
        else:
            # DataLoader seeds torch's generator per worker, so the global generator gives each worker its own draws
            item["audio"] = self.audio_transform(audio)
        if not self.frames:  # pretrain-audio: the JPEG decode and CLIP preprocessing (~3 ms) would be thrown away
            return item
        k = int(torch.randint(NUM_FRAMES, ())) if self.train else CENTRAL_FRAME
        try:
            with Image.open(io.BytesIO(sample[f"frame_{k}"])) as jpeg:
                item["image"] = self.image_transform(jpeg)
        except (OSError, UnidentifiedImageError) as e:
            raise BadFileError(where, f"frame {k} does not decode ({e})") from None
        return item


def collate_int16(items: list[dict[str, Any]]) -> dict[str, Any]:
    """``collate`` for items whose audio stays int16 for on-device augmentation, with their valid lengths."""
    if "audio_length" not in items[0]:
        return collate(items)
    batch = collate([{**item, "audio": torch.zeros(0)} for item in items])
    batch["audio"] = torch.stack([item["audio"] for item in items])
    batch["audio_length"] = torch.tensor([item["audio_length"] for item in items])
    return batch


class TierMix(CombinedStreamingDataset):
    """LitData's weighted mix of datasets, with a fresh draw of datasets each epoch, rank and loader worker.

    ``CombinedStreamingDataset`` seeds its dataset choices with the same seed every time it is iterated, so every
    epoch (and every rank and worker) would draw the tiers in one and the same order, and a tier's share of an epoch
    would be one fixed realisation instead of its weight. The streaming, DDP split and resume state are LitData's.
    """

    def __iter__(self):  # noqa: ANN204 - LitData's iterator type is private
        worker = _WorkerEnv.detect()
        rank = self._datasets[0].distributed_env.global_rank
        base = self._seed
        self._seed = hash((base, self._current_epoch, rank, worker.rank)) % 2**32
        try:
            return super().__iter__()
        finally:
            self._seed = base


class AudioSetDataModule(L.LightningDataModule):
    """AudioSet shards (``audioclip prepare audioset pack``) as a LightningDataModule.

    ``batch_size`` is the global batch, divided over the DDP ranks. ``train_dir`` / ``val_dir`` / ``test_dir`` are
    LitData directories: local paths or object-store URLs (``s3://...``; remote chunks are cached in ``cache_dir``).
    The training loader's position is part of ``state_dict()``, which Lightning stores in checkpoints, so a run
    resumed with ``ckpt_path`` continues mid-epoch instead of replaying the epoch's first batches.

    ``device_augment=True`` moves the training augmentations from the loader workers to the device: workers send
    int16 audio, ``on_after_batch_transfer`` augments the batch (same distributions as the per-sample path).
    ``frames=False`` leaves the frames undecoded (batches without ``image``): for ``pretrain-audio``, which uses none.
    ``balanced=True`` (shards packed with ``--balance-tiers``) draws each training clip in proportion to its repeat
    factor (``prepare.repeat_factors``); a resumed balanced run needs the same devices, ``num_workers`` and batch size.
    ``mixup_alpha > 0`` mixes each training clip and its multi-hot target with another clip of the batch, weight
    ``lam ~ Beta(alpha, alpha)`` (``data/audioset/mixup.py``; ``pretrain-audio`` only, needs ``frames=False``).
    """

    def __init__(
        self,
        train_dir: str | None = None,
        val_dir: str | None = None,
        test_dir: str | None = None,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        channels: int = 1,
        clip_seconds: float = 10.0,
        seed: int = 42,
        cache_dir: str | None = None,
        max_cache_size: str = "100GB",
        on_bad_file: str = "error",
        balanced: bool = False,
        frames: bool = True,
        device_augment: bool = False,
        mixup_alpha: float = 0.0,
    ) -> None:
        super().__init__()
        check_on_bad_file(on_bad_file)
        if mixup_alpha < 0 or (mixup_alpha > 0 and frames):
            raise ValueError(
                f"mixup_alpha: must be >= 0 and needs frames: false (pretrain-audio mixes audio and targets, not the "
                f"contrastive phases' frames and text), got mixup_alpha={mixup_alpha}, frames={frames}"
            )
        self.mixup_alpha = mixup_alpha
        self.save_hyperparameters()
        self.balanced = balanced
        self.frames = frames
        self.device_augment = device_augment
        self.on_bad_file = on_bad_file
        self.train_dir, self.val_dir, self.test_dir = train_dir, val_dir, test_dir
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.channels = channels
        self.clip_seconds = clip_seconds
        self.seed = seed
        self.cache_dir = cache_dir
        self.max_cache_size = max_cache_size
        self.class_names = class_names(next((d for d in (train_dir, val_dir, test_dir) if d), None))
        self.datasets: dict[str, StreamingDataset | CombinedStreamingDataset] = {}
        self._train_loader: StreamingDataLoader | None = None
        self._train_state: dict | None = None

    @property
    def has_test_split(self) -> bool:
        return self.test_dir is not None

    def _world_size(self) -> int:
        if self.trainer is not None:
            return self.trainer.world_size
        return rank_and_world()[1]

    def _dataset(self, split: str, directory: str | None, train: bool) -> AudioSetStreamingDataset:
        if directory is None:
            raise ValueError(f"AudioSetDataModule: {split}_dir is not set, so there is no {split} split")
        if "://" not in directory and not (Path(directory) / "index.json").is_file():
            raise FileNotFoundError(f"{split}_dir={directory}: no index.json; run `audioclip prepare audioset pack`")
        return AudioSetStreamingDataset(
            directory,
            train=train,
            channels=self.channels,
            clip_seconds=self.clip_seconds,
            names=self.class_names,
            seed=self.seed,
            cache_dir=self.cache_dir,
            max_cache_size=self.max_cache_size,
            on_bad_file=self.on_bad_file,
            frames=self.frames,
            device_augment=self.device_augment,
        )

    def _train_dataset(self) -> StreamingDataset | CombinedStreamingDataset:
        """The training split; packed in repeat tiers (``pack --balance-tiers``), one dataset per tier, combined:
        each clip once per epoch, or with ``balanced`` drawn in proportion to its tier's repeat factor."""
        tiers = read_json(join(self.train_dir, TIERS)) if self.train_dir is not None else None
        if tiers is None:
            if self.balanced:
                raise ValueError(
                    f"train_dir={self.train_dir}: balanced=True needs shards packed with --balance-tiers (no {TIERS})"
                )
            return self._dataset("train", self.train_dir, train=True)
        repeats = {int(r): n for r, n in tiers["tiers"].items()}
        datasets = [self._dataset("train", str(join(self.train_dir, f"tier-{r}")), train=True) for r in repeats]
        if not self.balanced:
            return CombinedStreamingDataset(datasets, seed=self.seed, iterate_over_all=True)
        # a draw picks tier r with probability n_r * r / sum(n * r): each of its clips is drawn r times as often as a
        # tier-1 clip. The epoch ends when a tier runs out (LitData's rule for weighted mixes): the rarest first.
        total = sum(n * r for r, n in repeats.items())
        weights = [n * r / total for r, n in repeats.items()]
        return TierMix(datasets, seed=self.seed, weights=weights, iterate_over_all=False)

    def setup(self, stage: str | None = None) -> None:
        # built here, after DDP started, because LitData reads the rank and world size when a dataset is made
        world_size = self._world_size()
        self.per_device_batch_size = per_device_batch_size(self.batch_size, world_size)
        self.per_device_eval_batch_size = per_device_batch_size(self.eval_batch_size, world_size)
        if stage in (None, "fit"):
            self.datasets["train"] = self._train_dataset()
        if stage in (None, "fit", "validate") and self.val_dir is not None:
            self.datasets["val"] = self._dataset("val", self.val_dir, train=False)
        if stage in (None, "test"):
            self.datasets["test"] = self._dataset("test", self.test_dir, train=False)

    def _loader(self, split: str, batch_size: int) -> StreamingDataLoader:
        if split not in self.datasets:
            raise RuntimeError(f"AudioSetDataModule: call setup() for the {split} split first (or set {split}_dir)")
        return StreamingDataLoader(
            self.datasets[split],
            batch_size=batch_size,
            num_workers=self.num_workers,
            collate_fn=collate_int16,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
            multiprocessing_context=worker_context(self.num_workers),
            # a signal to the process group is the main process's to act on (save, then stop the workers)
            worker_init_fn=IgnoreTerminationSignals(rank=getattr(self.trainer, "global_rank", 0)),
        )

    def train_dataloader(self) -> StreamingDataLoader:
        self._train_loader = self._loader("train", self.per_device_batch_size)
        if self._train_state is not None:
            self._train_loader.load_state_dict(self._train_state)
            self._train_state = None
        return self._train_loader

    def val_dataloader(self) -> StreamingDataLoader:
        return self._loader("val", self.per_device_eval_batch_size)

    def test_dataloader(self) -> StreamingDataLoader:
        return self._loader("test", self.per_device_eval_batch_size)

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """With ``device_augment``, a training batch's int16 audio gets the paper's augmentations here, on the
        device, as one batched op (``batch_augment.augment_batch``)."""
        if "audio_length" in batch:
            length = round(self.clip_seconds * SAMPLE_RATE)
            batch["audio"] = augment_batch(batch["audio"], batch.pop("audio_length"), length)
        if self.mixup_alpha > 0 and self.trainer is not None and self.trainer.training:
            batch = mixup_batch(batch, self.mixup_alpha, batch_seed(self.trainer, self.seed))
        return batch

    def state_dict(self) -> dict[str, Any]:
        if self._train_loader is None:
            return {}
        return {"train_loader": self._train_loader.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning restores the DataModule before it asks for the loaders: keep the state for train_dataloader()
        self._train_state = state_dict.get("train_loader")
        if self._train_loader is not None and self._train_state is not None:
            self._train_loader.load_state_dict(self._train_state)
            self._train_state = None

    def class_weights(self) -> torch.Tensor:
        """Per-class weights inverse to the class's clip count in ``train_dir``, mean 1 over the classes present.

        Classes without a training clip get 0. For balancing as the reference's ``class_weights`` did, weight a
        sample by the sum over its labels: ``sample_weights(target)``.
        """
        if self.train_dir is None:
            raise ValueError("class_weights needs train_dir holding label_counts.json (written by pack / merge)")
        path = join(self.train_dir, "label_counts.json")
        label_counts = read_json(path)
        if label_counts is None:
            raise FileNotFoundError(f"{path}: missing; re-run `audioclip prepare audioset pack` (or `merge`)")
        counts = torch.tensor(label_counts["counts"], dtype=torch.float64)
        weights = torch.where(counts > 0, 1.0 / counts.clamp(min=1), torch.zeros_like(counts))
        return (weights / weights[counts > 0].mean()).float()

    def sample_weights(self, target: torch.Tensor, class_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample weights (B,) of a multi-hot ``target`` (B, 527): the sum of its classes' weights."""
        weights = self.class_weights() if class_weights is None else class_weights
        return target.float() @ weights.to(target.device)
