"""Audio of any length read in blocks (`audioclip.data.stream`): the 44.1 kHz signal does not depend on the block
size and equals the whole-file path (`audioclip.inference.prepare_audio`) exactly, windows cover the whole file, and
no read asks soundfile for more than a block."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from audioclip.data.errors import BadFileError
from audioclip.data.stream import read_blocks, sliding_windows, window_samples
from audioclip.inference import prepare_audio


def noise_file(path, rate: int, seconds: float, channels: int = 1, seed: int = 0):
    rng = np.random.default_rng(seed)
    wave = (rng.standard_normal((round(rate * seconds), channels)) * 0.2).clip(-1, 1)
    sf.write(path, wave, rate, subtype="PCM_16")
    return path


@pytest.mark.parametrize(
    "rate, channels", [(48000, 1), (22050, 2), (8000, 1), (32000, 1), (44100, 2)], ids=lambda x: str(x)
)
def test_blocks_of_any_size_give_the_whole_file_resampling_exactly(tmp_path, rate, channels):
    path = noise_file(tmp_path / "x.wav", rate, 3.37, channels)
    whole = prepare_audio(path)[0]
    for block_seconds in (0.031, 0.7, 100.0):
        blocks = list(read_blocks(path, block_seconds))
        got = torch.cat(blocks, dim=-1)
        assert got.shape == whole.shape, block_seconds
        # exactly: every output sample is computed from the same input samples with the same kernel
        assert torch.equal(got, whole), (block_seconds, (got - whole).abs().max().item())


def test_windows_cover_the_file_and_the_last_one_ends_at_its_end(tmp_path):
    path = noise_file(tmp_path / "x.wav", 48000, 13.37)
    whole = prepare_audio(path)[0]
    windows = list(sliding_windows(path, window=5, hop=2.5, block_seconds=0.9))
    starts = [(w.start_seconds, w.end_seconds) for w in windows]
    assert starts == [(0.0, 5.0), (2.5, 7.5), (5.0, 10.0), (7.5, 12.5), (whole.shape[-1] / 44100 - 5, 13.37)]
    for w in windows:
        assert torch.equal(w.audio, whole[:, w.start : w.start + 220500])


def test_a_file_shorter_than_a_window_is_one_window_of_the_whole_file(tmp_path):
    path = noise_file(tmp_path / "short.wav", 44100, 1.5, channels=2)
    windows = list(sliding_windows(path, window=5, hop=2.5))
    assert len(windows) == 1 and windows[0].start == 0
    assert torch.equal(windows[0].audio, prepare_audio(path)[0])


def test_soundfile_is_never_asked_for_more_than_a_block(tmp_path, monkeypatch):
    path = noise_file(tmp_path / "long.wav", 48000, 20.0)
    asked = []
    read = sf.SoundFile.read

    def recording_read(self, frames=-1, *args, **kwargs):
        asked.append(frames)
        return read(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", recording_read)
    windows = list(sliding_windows(path, window=5, hop=2.5, block_seconds=2.0))
    assert len(windows) == 7
    assert asked and all(0 < frames <= 2 * 48000 for frames in asked)


@pytest.mark.parametrize("window, hop", [(0, 1), (5, 0), (5, -1), (float("nan"), 1), (1e-9, 1)])
def test_a_window_or_hop_that_is_not_a_positive_length_is_named(window, hop):
    with pytest.raises(ValueError, match="--window|--hop"):
        window_samples(window, hop)


def test_a_file_that_is_not_audio_names_the_file(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("not audio")
    with pytest.raises(BadFileError, match="notes.wav: not a readable audio file"):
        list(read_blocks(path))
