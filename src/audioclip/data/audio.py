"""Decoding helpers: read a clip with soundfile, check it, resample it, bring it to the int16 range.

AudioCLIP's audio head takes waveforms at 44.1 kHz whose values lie in the int16 range
(Guzhov et al., 2021; reference loaders ``utils/datasets/esc50.py`` and ``us8k.py`` of
AndreyGuzhov/AudioCLIP). soundfile reads PCM_16 as ``int16 / 32768`` in float32, which is exact,
so multiplying by 32768 gives back the stored samples bit for bit. Resampling uses
``torchaudio.functional.resample`` (windowed sinc) instead of the reference's librosa.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from audioclip.constants import INT16_SCALE, SAMPLE_RATE
from audioclip.data.errors import BadFileError, MissingFileError

INT16_MIN, INT16_MAX = -32768, 32767

# libsndfile logs "data : <declared> (should be <available>)" when a WAV/AIFF header promises
# more bytes than the file holds; soundfile then silently returns the shorter signal.
_SHORT_CHUNK = re.compile(r"^(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


def read_audio_int16_range(path: Path) -> tuple[np.ndarray, int]:
    """Read a file as float32 (channels, samples) scaled so that int16 PCM gives its integer values.

    Raises ``BadFileError`` naming ``path`` when the file is empty, not audio, truncated or holds no
    samples (a missing file raises the ``FileNotFoundError`` flavour).
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise MissingFileError(path) from None
    if size == 0:
        raise BadFileError(path, "file is empty (0 bytes)")
    try:
        # as bytes: a file name that is not valid UTF-8 (e.g. Latin-1 from an old archive) opens all the same
        with sf.SoundFile(os.fsencode(path)) as file:
            log = file.extra_info
            audio = file.read(dtype="float32", always_2d=True)
            sample_rate = file.samplerate
    except (sf.LibsndfileError, RuntimeError) as error:
        raise BadFileError(path, f"not a readable audio file ({error})") from None
    if problem := header_problem(log):
        raise BadFileError(path, problem)
    if audio.shape[0] == 0:
        raise BadFileError(path, "holds no audio samples")
    if not np.isfinite(audio).all():
        raise BadFileError(path, "holds NaN or infinite samples")
    return np.ascontiguousarray(audio.T) * INT16_SCALE, sample_rate


def header_problem(extra_info: str) -> str | None:
    """What libsndfile's log (`SoundFile.extra_info`) says is wrong with a file's header, or None: a WAV/AIFF whose
    header promises more audio than the file holds (soundfile would silently return the shorter signal)."""
    for declared, available in _SHORT_CHUNK.findall(extra_info):
        if int(declared) > int(available):
            return f"truncated: the header declares {declared} bytes of audio, the file holds {available}"
    return None


def resample(audio: np.ndarray, sample_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a float (channels, samples) array; a no-op at the target rate."""
    if sample_rate == target_rate:
        return audio
    return AF.resample(torch.from_numpy(audio), sample_rate, target_rate).numpy()


def round_to_int16(audio: np.ndarray) -> np.ndarray:
    """Round to the nearest integer and clip to the int16 range (resampling can overshoot it)."""
    return np.clip(np.rint(audio), INT16_MIN, INT16_MAX).astype(np.int16)


def minmax_to_int16(audio: np.ndarray) -> np.ndarray:
    """Min-max scale the whole clip onto [-32768, 32767], as the reference US8K loader does.

    A constant clip has no range to stretch; it becomes silence rather than the reference's NaNs.
    """
    low, high = float(audio.min()), float(audio.max())
    if high == low:
        return np.zeros(audio.shape, dtype=np.int16)
    scaled = (audio.astype(np.float64) - low) * ((INT16_MAX - INT16_MIN) / (high - low)) + INT16_MIN
    return round_to_int16(scaled)
