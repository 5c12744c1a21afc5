"""Train-time waveform augmentations of AudioCLIP (Guzhov et al., 2021, section 4.2).

The paper fine-tunes with time scaling by ``1.5 ** U(-1, 1)`` (linear interpolation), time
inversion with p=0.5, random crop / pad to the target length (centre crop / pad at evaluation)
and additive white Gaussian noise at an SNR of U(10, 120) dB with p=0.25. The reference
implementation (AndreyGuzhov/AudioCLIP, ``utils/transforms.py`` and ``protocols/*.json``)
fixes the details kept here: the pad value is the mean over channels of the edge sample, and the
noise power follows from the power of the whole clip. Two reference quirks are not reproduced:
its flip of a (channels, samples) array reverses the channels instead of time, and its SNR draw
overshoots the upper bound by 1 dB.

Every transform takes a (channels, samples) float tensor and an optional ``torch.Generator``.
Without a generator the draws come from torch's global RNG, which ``DataLoader`` seeds
differently in every worker (and ``lightning.seed_everything(workers=True)`` makes reproducible),
so no numpy or Python RNG is involved and no ``worker_init_fn`` is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch


class AudioTransform(Protocol):
    def __call__(self, audio: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def _bernoulli(p: float, generator: torch.Generator | None) -> bool:
    return torch.rand((), generator=generator).item() < p


class Compose:
    """Apply transforms in order, handing each the same generator."""

    def __init__(self, transforms: Sequence[AudioTransform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, audio: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for transform in self.transforms:
            audio = transform(audio, generator)
        return audio

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class RandomScale:
    """Stretch or squeeze time by ``max_scale ** U(-1, 1)`` with linear interpolation.

    Output sample ``j`` reads the input at position ``j / factor``, so a factor of 1.5 makes the
    clip 1.5x longer (and lower in pitch), as in the paper.
    """

    def __init__(self, max_scale: float = 1.5) -> None:
        if max_scale < 1.0:
            raise ValueError(f"max_scale must be >= 1, got {max_scale}")
        self.max_scale = max_scale

    def __call__(self, audio: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        factor = self.max_scale ** _uniform(-1.0, 1.0, generator)
        return time_scale(audio, factor)

    def __repr__(self) -> str:
        return f"RandomScale(max_scale={self.max_scale})"


def time_scale(audio: torch.Tensor, factor: float) -> torch.Tensor:
    """Resample ``audio`` along time to ``int(samples * factor)`` samples by linear interpolation."""
    num_in = audio.shape[-1]
    num_out = max(1, int(num_in * factor))
    position = torch.arange(num_out, dtype=torch.float64) / factor
    left = position.long().clamp_(max=num_in - 1)
    right = (left + 1).clamp_(max=num_in - 1)
    weight = (position - left).to(audio.dtype)
    return audio[..., left] * (1 - weight) + audio[..., right] * weight


class RandomFlip:
    """Reverse time with probability ``p`` (the paper's time inversion)."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, audio: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return audio.flip(-1) if _bernoulli(self.p, generator) else audio

    def __repr__(self) -> str:
        return f"RandomFlip(p={self.p})"


class RandomCropPad:
    """Crop or pad to exactly ``length`` samples: at a random offset in training, centred otherwise.

    Padding repeats the mean over channels of the first (left) and last (right) sample, as the
    reference does, so padding adds no step at the clip's edges.
    """

    def __init__(self, length: int, train: bool = True) -> None:
        if length < 1:
            raise ValueError(f"length must be positive, got {length}")
        self.length = length
        self.train = train

    def _offset(self, slack: int, generator: torch.Generator | None) -> int:
        if self.train:
            return int(torch.randint(0, slack + 1, (), generator=generator).item())
        return round(0.5 * slack)

    def __call__(self, audio: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        num = audio.shape[-1]
        if num > self.length:
            left = self._offset(num - self.length, generator)
            return audio[..., left : left + self.length]
        if num < self.length:
            left = self._offset(self.length - num, generator)
            right = self.length - num - left
            shape = audio.shape[:-1]
            return torch.cat(
                (
                    audio[..., :1].mean().expand(*shape, left),
                    audio,
                    audio[..., -1:].mean().expand(*shape, right),
                ),
                dim=-1,
            )
        return audio

    def __repr__(self) -> str:
        return f"RandomCropPad(length={self.length}, train={self.train})"


class RandomNoise:
    """With probability ``p``, add white Gaussian noise at an SNR drawn from U(snr_min_db, snr_max_db)."""

    def __init__(self, snr_min_db: float = 10.0, snr_max_db: float = 120.0, p: float = 0.25) -> None:
        if snr_min_db > snr_max_db:
            raise ValueError(f"snr_min_db ({snr_min_db}) must not exceed snr_max_db ({snr_max_db})")
        self.snr_min_db = snr_min_db
        self.snr_max_db = snr_max_db
        self.p = p

    def __call__(self, audio: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not _bernoulli(self.p, generator):
            return audio
        snr_db = _uniform(self.snr_min_db, self.snr_max_db, generator)
        signal_power = audio.double().pow(2).mean().item()
        noise_std = (signal_power / 10.0 ** (snr_db / 10.0)) ** 0.5
        noise = torch.randn(audio.shape, generator=generator, dtype=audio.dtype)
        return audio + noise * noise_std

    def __repr__(self) -> str:
        return f"RandomNoise(snr_min_db={self.snr_min_db}, snr_max_db={self.snr_max_db}, p={self.p})"


def train_audio_transform(length: int) -> Compose:
    """The paper's training augmentations, ending in a clip of exactly ``length`` samples."""
    return Compose(
        [RandomScale(1.5), RandomFlip(0.5), RandomCropPad(length, train=True), RandomNoise(10.0, 120.0, 0.25)]
    )


def eval_audio_transform(length: int) -> Compose:
    """Evaluation: no randomness, only a centre crop / pad to ``length`` samples."""
    return Compose([RandomCropPad(length, train=False)])
