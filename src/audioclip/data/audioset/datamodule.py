"""The AudioSet DataModule: streams the shards written by ``prepare pack`` into batches of the batch contract.

Paper (Guzhov et al. 2021, sec. 4.1-4.3): audio, one of ten equally spaced frames (random in training, the central
one in evaluation) and the class names as text. Items follow DESIGN.md's batch contract: ``audio`` (C, 441000)
at 44.1 kHz in the int16 range, ``image`` (3, 224, 224) CLIP-preprocessed, ``text`` the display names joined with
", ", ``target`` a 527-way multi-hot, ``id`` the YTID.

Channels: the ESResNeXt-fbsp body runs every audio channel separately and sums the features, so a batch needs one
channel count. ``channels=1`` (default) averages stereo to mono, as a mono clip has always been; ``channels=2``
duplicates mono clips. Streaming, global shuffling, the split across DDP ranks / nodes / loader workers and the
mid-epoch resume state come from LitData's ``StreamingDataset`` / ``StreamingDataLoader``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import soundfile as sf
import torch
import torch.distributed as dist
from clip.clip import _transform as clip_transform
from litdata import StreamingDataLoader, StreamingDataset
from PIL import Image, UnidentifiedImageError

from audioclip.data.audioset.metadata import DEFAULT_LABELS, NUM_CLASSES, NUM_FRAMES, SAMPLE_RATE, read_class_labels
from audioclip.data.common import (
    BadFileError,
    check_on_bad_file,
    clip_problem,
    collate,
    first_usable,
    per_device_batch_size,
)
from audioclip.data.transforms import eval_audio_transform, train_audio_transform
from audioclip.reliability import IgnoreTerminationSignals

# Ten frames sit at the centres of ten equal intervals (prepare.frame_times), so none is at the exact middle;
# frame 5 (55 % of the clip) is the one Python's ``len // 2`` convention calls central.
CENTRAL_FRAME = NUM_FRAMES // 2
MAX_SAMPLES = 60 * SAMPLE_RATE  # AudioSet segments are 10 s; anything over a minute is not a segment


def class_names(shard_dir: str | Path | None = None) -> list[str]:
    """The 527 display names in index order: the shard directory's copy when it has one, else the bundled CSV."""
    if shard_dir is not None and (Path(shard_dir) / "class_names.json").is_file():
        return json.loads((Path(shard_dir) / "class_names.json").read_text())
    return [c.display_name for c in read_class_labels(DEFAULT_LABELS)]


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
    ) -> None:
        check_on_bad_file(on_bad_file)
        self.on_bad_file = on_bad_file
        if channels not in (1, 2):
            raise ValueError(f"channels must be 1 (stereo averaged) or 2 (mono duplicated), got {channels}")
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
        self.audio_transform = train_audio_transform(length) if train else eval_audio_transform(length)
        self.image_transform: Callable = clip_transform(224)

    def __getitem__(self, index: Any) -> dict[str, Any]:
        """A bad sample (audio or frame that does not decode, NaN/Inf, silence, no samples) raises `BadFileError`
        naming its YTID, or under `on_bad_file="skip"` is replaced by the next good sample and listed in the
        item's `skipped` (reported by `reliability.BadDataLog`)."""
        position = index if isinstance(index, int) else getattr(index, "index", 0)

        def load(offset: int) -> dict[str, Any]:
            return self._decode(
                super(AudioSetStreamingDataset, self).__getitem__(
                    index if offset == 0 else (position + offset) % len(self)
                )
            )

        return first_usable(load, len(self), self.on_bad_file, self.input_dir.path or str(self.input_dir.url))

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
        # DataLoader seeds torch's generator per worker, so the global generator gives each worker its own draws
        audio = self.audio_transform(audio)
        k = int(torch.randint(NUM_FRAMES, ())) if self.train else CENTRAL_FRAME
        try:
            with Image.open(io.BytesIO(sample[f"frame_{k}"])) as jpeg:
                image = self.image_transform(jpeg)
        except (OSError, UnidentifiedImageError) as e:
            raise BadFileError(where, f"frame {k} does not decode ({e})") from None
        labels = sample["labels"].astype(np.int64)
        target = torch.zeros(NUM_CLASSES)
        target[torch.from_numpy(labels)] = 1.0
        return {
            "audio": audio,
            "image": image,
            "text": ", ".join(self.names[i] for i in labels),
            "target": target,
            "id": ytid,
        }


class AudioSetDataModule(L.LightningDataModule):
    """AudioSet shards (``audioclip prepare audioset pack``) as a LightningDataModule.

    ``batch_size`` is the global batch, divided over the DDP ranks. ``train_dir`` / ``val_dir`` / ``test_dir`` are
    LitData directories: local paths or object-store URLs (``s3://...``; remote chunks are cached in ``cache_dir``).
    The training loader's position is part of ``state_dict()``, which Lightning stores in checkpoints, so a run
    resumed with ``ckpt_path`` continues mid-epoch instead of replaying the epoch's first batches.
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
    ) -> None:
        super().__init__()
        check_on_bad_file(on_bad_file)
        self.save_hyperparameters()
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
        self.datasets: dict[str, AudioSetStreamingDataset] = {}
        self._train_loader: StreamingDataLoader | None = None
        self._train_state: dict | None = None

    @property
    def has_test_split(self) -> bool:
        return self.test_dir is not None

    def _world_size(self) -> int:
        if self.trainer is not None:
            return self.trainer.world_size
        return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

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
        )

    def setup(self, stage: str | None = None) -> None:
        # built here, after DDP started, because LitData reads the rank and world size when a dataset is made
        world_size = self._world_size()
        self.per_device_batch_size = per_device_batch_size(self.batch_size, world_size)
        self.per_device_eval_batch_size = per_device_batch_size(self.eval_batch_size, world_size)
        if stage in (None, "fit"):
            self.datasets["train"] = self._dataset("train", self.train_dir, train=True)
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
            collate_fn=collate,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
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
        if self.train_dir is None or "://" in self.train_dir:
            raise ValueError("class_weights needs a local train_dir holding label_counts.json (written by pack)")
        path = Path(self.train_dir) / "label_counts.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; re-run `audioclip prepare audioset pack`")
        counts = torch.tensor(json.loads(path.read_text())["counts"], dtype=torch.float64)
        weights = torch.where(counts > 0, 1.0 / counts.clamp(min=1), torch.zeros_like(counts))
        return (weights / weights[counts > 0].mean()).float()

    def sample_weights(self, target: torch.Tensor, class_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample weights (B,) of a multi-hot ``target`` (B, 527): the sum of its classes' weights."""
        weights = self.class_weights() if class_weights is None else class_weights
        return target.float() @ weights.to(target.device)
