"""Synthetic datasets: the official layouts and columns, mixed US8K formats, and learnable classes."""

import csv

import numpy as np
import soundfile as sf

from audioclip.data.esc50 import ESC50_METADATA, read_esc50_metadata
from audioclip.data.synthetic import main
from audioclip.data.us8k import US8K_METADATA, read_us8k_metadata


def header(path):
    with open(path, newline="") as file:
        return next(csv.reader(file))


def test_cli_writes_both_official_layouts(shared_dir, tmp_path):
    main(["--esc50", str(tmp_path / "esc50"), "--us8k", str(tmp_path / "us8k"), "--classes", "3",
          "--clips-per-class", "10"])  # fmt: skip
    assert header(tmp_path / "esc50" / ESC50_METADATA) == header(shared_dir / "fixtures/meta/esc50.csv")
    assert header(tmp_path / "us8k" / US8K_METADATA) == header(shared_dir / "fixtures/meta/UrbanSound8K.csv")

    esc50 = read_esc50_metadata(tmp_path / "esc50")
    assert len(esc50) == 30 and {r.fold for r in esc50} == {1, 2, 3, 4, 5}
    assert {r.label for r in esc50} == {"dog", "rooster", "pig"}
    for record in esc50:
        info = sf.info(record.path)
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (44100, 1, 220500, "PCM_16")
        assert record.id.startswith(f"{record.fold}-") and record.id.endswith(f"-{record.target}.wav")

    us8k = read_us8k_metadata(tmp_path / "us8k")
    assert len(us8k) == 30 and {r.fold for r in us8k} == set(range(1, 11))
    infos = [sf.info(r.path) for r in us8k]
    assert {i.samplerate for i in infos} == {16000, 22050, 44100, 48000}
    assert {i.channels for i in infos} == {1, 2}
    assert max(i.duration for i in infos) <= 4.0 and min(i.duration for i in infos) < 3.0


def log_band_energies(path) -> np.ndarray:
    """Log energy in 64 log-spaced bands from 100 Hz to 20 kHz: a coarse mel-like spectrum."""
    audio, rate = sf.read(path, always_2d=True)
    power = np.abs(np.fft.rfft(audio[:, 0])) ** 2
    frequencies = np.fft.rfftfreq(audio.shape[0], 1 / rate)
    edges = np.geomspace(100, 20000, 65)
    return np.log(
        np.array([power[(frequencies >= lo) & (frequencies < hi)].sum() for lo, hi in zip(edges, edges[1:])]) + 1e-6
    )


def test_classes_are_separable_on_a_log_spectrum(tmp_path):
    """A nearest-class-mean rule on log band energies, fit on folds 2-5, classifies fold 1: a stand-in
    for the tiny CNN of the demo."""
    main(["--esc50", str(tmp_path), "--classes", "10", "--clips-per-class", "5"])
    records = read_esc50_metadata(tmp_path)
    features = np.stack([log_band_energies(r.path) for r in records])
    targets = np.array([r.target for r in records])
    test = np.array([r.fold == 1 for r in records])
    means = np.stack([features[~test & (targets == c)].mean(axis=0) for c in range(10)])
    predicted = np.argmin(((features[test, None] - means[None]) ** 2).sum(-1), axis=1)
    assert (predicted == targets[test]).mean() == 1.0
