"""UrbanSound8K (Salamon et al., 2014): 8,732 clips up to 4 s, 16-48 kHz, mono and stereo, 10 classes, 10 folds.

Official layout: ``root/audio/fold{1..10}/*.wav`` and ``root/metadata/UrbanSound8K.csv`` with the
columns ``slice_file_name, fsID, start, end, salience, fold, classID, class``. As in the reference
loader (AndreyGuzhov/AudioCLIP, ``utils/datasets/us8k.py``) and the paper's US8K setup, each clip
is resampled to 44.1 kHz, mono is duplicated to 2 channels, the clip is cut to 4 s (176,400
samples) and then min-max scaled onto the full int16 range. The scaling happens before storage,
so the cache keeps int16 (rounded to the nearest integer).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from audioclip.constants import SAMPLE_RATE, US8K_FOLDS
from audioclip.data.audio import minmax_to_int16, read_audio_int16_range, resample
from audioclip.data.cache import CacheSpec
from audioclip.data.errors import BadFileError
from audioclip.data.folds import ClipRecord, FoldedAudioDataModule
from audioclip.data.layouts import US8K_LAYOUT, US8K_METADATA  # noqa: F401 - US8K_METADATA: its users import it from here

US8K_CLASSES = (
    "air_conditioner", "car_horn", "children_playing", "dog_bark", "drilling",
    "engine_idling", "gun_shot", "jackhammer", "siren", "street_music",
)  # fmt: skip
US8K_COLUMNS = ("slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class")
US8K_LENGTH = 4 * SAMPLE_RATE


def decode_us8k(path: Path) -> np.ndarray:
    """One clip as int16 (2, <= 176,400): 44.1 kHz, mono duplicated, the first 4 s, min-max scaled."""
    audio, sample_rate = read_audio_int16_range(path)
    if audio.shape[0] > 2:
        raise BadFileError(path, f"has {audio.shape[0]} channels; UrbanSound8K clips are mono or stereo")
    audio = resample(audio, sample_rate)
    if audio.shape[0] == 1:
        audio = np.concatenate((audio, audio))
    return minmax_to_int16(audio[:, :US8K_LENGTH])


def read_us8k_metadata(root: Path) -> list[ClipRecord]:
    """The rows of ``root/metadata/UrbanSound8K.csv`` (only the columns the DataModule needs are required)."""
    return US8K_LAYOUT.read(root)


class US8KDataModule(FoldedAudioDataModule):
    """UrbanSound8K with fold ``fold`` as the test split; items are 2 channels x 176,400 samples."""

    dataset_name = "UrbanSound8K"
    layout = US8K_LAYOUT
    num_folds = US8K_FOLDS
    cache_spec = CacheSpec(name="us8k", decoder=decode_us8k, channels=2, length=US8K_LENGTH, version="1")
