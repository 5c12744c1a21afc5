"""ESC-50 (Piczak, 2015): 2,000 five-second clips at 44.1 kHz, 50 classes, 5 official folds.

Official layout (karolpiczak/ESC-50): ``root/audio/*.wav`` and ``root/meta/esc50.csv`` with the
columns ``filename, fold, target, category, esc10, src_file, take``. As in the reference loader
(AndreyGuzhov/AudioCLIP, ``utils/datasets/esc50.py``) items are mono at 44.1 kHz with the int16
sample values, and the paper fine-tunes on 5 s (220,500 samples).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from audioclip.constants import ESC50_FOLDS, SAMPLE_RATE
from audioclip.data.audio import read_audio_int16_range, resample, round_to_int16
from audioclip.data.cache import CacheSpec
from audioclip.data.folds import ClipRecord, FoldedAudioDataModule
from audioclip.data.layouts import ESC50_LAYOUT, ESC50_METADATA  # noqa: F401 - ESC50_METADATA: its users import it from here

ESC50_CLASSES = (
    "dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow",
    "rain", "sea_waves", "crackling_fire", "crickets", "chirping_birds", "water_drops", "wind", "pouring_water",
    "toilet_flush", "thunderstorm", "crying_baby", "sneezing", "clapping", "breathing", "coughing", "footsteps",
    "laughing", "brushing_teeth", "snoring", "drinking_sipping", "door_wood_knock", "mouse_click", "keyboard_typing",
    "door_wood_creaks", "can_opening", "washing_machine", "vacuum_cleaner", "clock_alarm", "clock_tick",
    "glass_breaking", "helicopter", "chainsaw", "siren", "car_horn", "engine", "train", "church_bells", "airplane",
    "fireworks", "hand_saw",
)  # fmt: skip
ESC10_CLASSES = frozenset(
    {"dog", "rooster", "rain", "sea_waves", "crackling_fire", "crying_baby", "sneezing", "helicopter", "chainsaw",
     "clock_tick"}
)  # fmt: skip
ESC50_COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
ESC50_LENGTH = 5 * SAMPLE_RATE


def decode_esc50(path: Path) -> np.ndarray:
    """One clip as int16 (1, <= 220,500): mono (channel mean), 44.1 kHz, the first 5 s."""
    audio, sample_rate = read_audio_int16_range(path)
    audio = resample(audio.mean(axis=0, keepdims=True), sample_rate)
    return round_to_int16(audio[:, :ESC50_LENGTH])


def read_esc50_metadata(root: Path) -> list[ClipRecord]:
    """The rows of ``root/meta/esc50.csv`` (only the columns the DataModule needs are required)."""
    return ESC50_LAYOUT.read(root)


class ESC50DataModule(FoldedAudioDataModule):
    """ESC-50 with fold ``fold`` as the test split; items are 1 channel x 220,500 samples."""

    dataset_name = "ESC-50"
    layout = ESC50_LAYOUT
    num_folds = ESC50_FOLDS
    cache_spec = CacheSpec(name="esc50", decoder=decode_esc50, channels=1, length=ESC50_LENGTH, version="1")
