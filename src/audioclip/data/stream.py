"""Audio of any length: a file read in blocks with soundfile, resampled to 44.1 kHz block by block, cut into windows.

A one-hour recording is 159 million samples a channel at 44.1 kHz (635 MB in float32), so nothing here holds more
than a block and one window of it. The model's input convention is the training data's (`audioclip.data.audio`):
44.1 kHz, the int16 value range.

Resampling is the windowed-sinc of `torchaudio.functional.resample` (what `audioclip.inference.prepare_audio` uses on
a whole file; `torchaudio.transforms.Resample` in float32 is the same kernel, computed once), applied to overlapping
pieces so that the result does not depend on where the blocks begin. With the rates reduced by their gcd to `a`
input samples -> `b` output samples (a *period*), torchaudio's output period `j` is a dot product of its kernel with
the input samples `[j*a - width, j*a + a + width)` (zeros outside the file), `width = ceil(lowpass_filter_width * a /
(rolloff * min(a, b)))`. A piece that starts on a period boundary and carries `margin` whole periods of context on
each side (at least `width` samples) therefore yields exactly the output periods of its middle, which are kept; the
context periods are computed again by the neighbouring piece.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.transforms as AT

from audioclip.constants import INT16_SCALE, SAMPLE_RATE
from audioclip.data.audio import header_problem
from audioclip.data.errors import BadFileError, MissingFileError

# torchaudio.functional.resample's defaults, which `prepare_audio` uses: the kernel's reach depends on them
LOWPASS_FILTER_WIDTH = 6
ROLLOFF = 0.99
BLOCK_SECONDS = 30.0  # how much of the file is decoded at a time: 5.3 MB a channel at 44.1 kHz


class BlockResampler:
    """`torchaudio.functional.resample` of a signal that arrives in pieces of any size: `push` each piece, then
    `finish`; the concatenated outputs are the resampling of the whole signal (see the module's docstring)."""

    def __init__(self, orig_rate: int, new_rate: int, channels: int) -> None:
        self.orig_rate, self.new_rate = orig_rate, new_rate
        gcd = math.gcd(orig_rate, new_rate)
        self.a, self.b = orig_rate // gcd, new_rate // gcd
        width = math.ceil(LOWPASS_FILTER_WIDTH * self.a / (ROLLOFF * min(self.a, self.b)))
        self.margin = math.ceil(width / self.a)  # whole periods of context on each side of a piece (>= width)
        # the transform computes the kernel once; `functional.resample` would compute it again for every piece
        self.resample = AT.Resample(
            orig_rate, new_rate, lowpass_filter_width=LOWPASS_FILTER_WIDTH, rolloff=ROLLOFF, dtype=torch.float32
        )
        # the input from period (emitted - margin) on; before the file's start the resampler sees zeros
        self.pending = torch.zeros(channels, self.margin * self.a)
        self.emitted = 0  # output periods given out so far
        self.received = 0  # input samples pushed so far

    def _emit(self, periods: int) -> torch.Tensor:
        span = (periods + 2 * self.margin) * self.a
        out = self.resample(self.pending[:, :span])
        self.pending = self.pending[:, periods * self.a :]
        self.emitted += periods
        return out[:, self.margin * self.b : (self.margin + periods) * self.b]

    def push(self, piece: torch.Tensor) -> torch.Tensor:
        """The output samples that `piece` (channels, n) completes (possibly none)."""
        self.received += piece.shape[-1]
        self.pending = torch.cat([self.pending, piece], dim=-1)
        periods = self.pending.shape[-1] // self.a - 2 * self.margin
        return self._emit(periods) if periods > 0 else self.pending.new_zeros(self.pending.shape[0], 0)

    def finish(self) -> torch.Tensor:
        """The rest of the output: `ceil(received * new / orig)` samples in all, as torchaudio gives."""
        total = math.ceil(self.received * self.b / self.a)
        periods = math.ceil(total / self.b) - self.emitted
        if periods <= 0:
            return self.pending.new_zeros(self.pending.shape[0], 0)
        missing = (periods + 2 * self.margin) * self.a - self.pending.shape[-1]
        self.pending = torch.nn.functional.pad(self.pending, (0, max(missing, 0)))
        out = self._emit(periods)
        return out[:, : out.shape[-1] - (self.emitted * self.b - total)]


@dataclass(frozen=True)
class StreamInfo:
    """What the file's header says: its rate, channel count and length (in its own samples and in seconds)."""

    path: Path
    sample_rate: int
    channels: int
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def stream_info(path: str | Path) -> StreamInfo:
    """Open `path` and read its header; a BadFileError naming the file when it cannot be used."""
    path = Path(path)
    if path.is_dir():
        raise BadFileError(path, "is a folder, not an audio file")
    if not path.is_file():
        raise MissingFileError(path, "no such audio file")
    if path.stat().st_size == 0:
        raise BadFileError(path, "file is empty (0 bytes)")
    try:
        with sf.SoundFile(os.fsencode(path)) as file:
            info = StreamInfo(path, file.samplerate, file.channels, file.frames)
            problem = header_problem(file.extra_info)
    except (sf.LibsndfileError, RuntimeError) as error:
        raise BadFileError(path, f"not a readable audio file ({error})") from None
    if problem:
        raise BadFileError(path, problem)
    if info.frames == 0:
        raise BadFileError(path, "holds no audio samples")
    return info


def read_blocks(path: str | Path, block_seconds: float = BLOCK_SECONDS) -> Iterator[torch.Tensor]:
    """The file at 44.1 kHz in the int16 value range, as (channels, samples) float32 blocks of about `block_seconds`
    (the last may be shorter); their concatenation does not depend on `block_seconds`."""
    info = stream_info(path)
    if not block_seconds > 0:
        raise ValueError(f"block_seconds must be > 0, got {block_seconds}")
    frames = max(1, round(block_seconds * info.sample_rate))
    resampler = None
    if info.sample_rate != SAMPLE_RATE:
        resampler = BlockResampler(info.sample_rate, SAMPLE_RATE, info.channels)
    with sf.SoundFile(os.fsencode(info.path)) as file:
        while True:
            block = file.read(frames, dtype="float32", always_2d=True)
            if block.shape[0] == 0:
                break
            if not np.isfinite(block).all():
                where = file.tell() / info.sample_rate
                raise BadFileError(info.path, f"holds NaN or infinite samples (in the block ending at {where:.1f} s)")
            wave = torch.from_numpy(np.ascontiguousarray(block.T)) * INT16_SCALE
            out = wave if resampler is None else resampler.push(wave)
            if out.shape[-1]:
                yield out
    if resampler is not None and (tail := resampler.finish()).shape[-1]:
        yield tail


@dataclass(frozen=True)
class Window:
    """One window of a file: its first sample and its length at 44.1 kHz, and its audio (channels, samples)."""

    start: int
    audio: torch.Tensor

    @property
    def start_seconds(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def end_seconds(self) -> float:
        return (self.start + self.audio.shape[-1]) / SAMPLE_RATE


def window_samples(window: float, hop: float) -> tuple[int, int]:
    """(window, hop) in seconds -> samples at 44.1 kHz; a ValueError naming the setting when one is not positive."""
    for name, value in (("--window", window), ("--hop", hop)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and round(value * SAMPLE_RATE) > 0):
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return round(window * SAMPLE_RATE), round(hop * SAMPLE_RATE)


def sliding_windows(
    path: str | Path, window: float, hop: float, block_seconds: float = BLOCK_SECONDS
) -> Iterator[Window]:
    """Windows of `window` seconds every `hop` seconds over the whole file, read in blocks.

    Windows start at 0, hop, 2 hop, ...; where the last of them ends before the file does, one more window ends at
    the file's end, so every sample is scored. A file shorter than one window is one window: the whole file.
    """
    size, step = window_samples(window, hop)
    buffer = torch.zeros(0)
    buffer_start = 0  # the file's sample at buffer[..., 0]
    next_start = 0
    last_end = 0  # where the latest window yielded ends
    for block in read_blocks(path, block_seconds):
        buffer = block if buffer.numel() == 0 else torch.cat([buffer, block], dim=-1)
        while next_start + size <= buffer_start + buffer.shape[-1]:
            offset = next_start - buffer_start
            yield Window(next_start, buffer[:, offset : offset + size].clone())
            last_end = next_start + size
            next_start += step
        # keep what the next window needs, and the last `size` samples for a final window that ends at the file's end
        keep_from = min(next_start, buffer_start + buffer.shape[-1] - size)
        if keep_from > buffer_start:
            buffer = buffer[:, keep_from - buffer_start :]
            buffer_start = keep_from
    total = buffer_start + buffer.shape[-1]
    if last_end == 0:  # shorter than one window
        yield Window(0, buffer)
    elif last_end < total:
        yield Window(total - size, buffer[:, -size:].clone())
