"""Audio of any length classified window by window (`audioclip.evaluation.timeline`, `audioclip classify --window`):
each window scores as `audioclip.classify` scores that excerpt, no score depends on the block size, a tone placed at
a known time is found at that time, and the timeline is written as CSV, JSON and a plot."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import audioclip
from audioclip.cli import main
from audioclip.evaluation.timeline import classify_windows
from audioclip.inference import prepare_audio

LABELS = ["dog", "rain", "siren"]
RATE = 48000  # not 44.1 kHz: the windows are resampled block by block


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return audioclip.load(tiny_checkpoint, precision="32-true")


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """12.3 s of noise at 48 kHz with a louder 1 kHz tone from 5 s to 7.5 s."""
    rng = np.random.default_rng(0)
    wave = rng.standard_normal(round(12.3 * RATE)) * 0.05
    tone = slice(5 * RATE, round(7.5 * RATE))
    wave[tone] += 0.5 * np.sin(2 * np.pi * 1000 * np.arange(tone.stop - tone.start) / RATE)
    path = tmp_path_factory.mktemp("long") / "recording.wav"
    sf.write(path, wave.astype(np.float32), RATE, subtype="PCM_16")
    return path


def test_each_window_scores_as_classify_scores_that_excerpt(model, recording):
    timeline = classify_windows(model, recording, LABELS, window=2.5, hop=1.25, block_seconds=1.7)
    whole = prepare_audio(recording)[0]
    assert [(row.start, row.end) for row in timeline.rows][:3] == [(0.0, 2.5), (1.25, 3.75), (2.5, 5.0)]
    assert timeline.rows[-1].end == pytest.approx(12.3, abs=1e-4)
    for row in timeline.rows:
        excerpt = whole[:, round(row.start * 44100) : round(row.end * 44100)]
        expected = audioclip.classify(model, excerpt / 32768, LABELS, sample_rate=44100)
        assert list(row.probs) == list(expected)  # most probable first
        assert row.probs == pytest.approx(expected, abs=1e-6)


def test_no_window_score_depends_on_the_block_size(model, recording):
    # the samples are equal to the bit (tests/data/test_stream_blocks.py), so the scores are too
    runs = [classify_windows(model, recording, LABELS, window=2.5, hop=1.25, block_seconds=s) for s in (0.37, 3.0, 60)]
    assert runs[0].rows == runs[1].rows == runs[2].rows
    assert runs[0].clip == runs[1].clip == runs[2].clip


def test_a_tone_placed_at_a_known_time_is_found_at_that_time(model, recording, monkeypatch):
    whole = prepare_audio(recording)
    # the text tower answers with the audio embeddings of the tone's window and of a window of noise alone, so that
    # the labels "tone" and "noise" mean what they say for this random tiny model; the audio path is the real one
    with torch.no_grad():
        tone, noise = model.encode_audio(torch.cat([whole[..., 5 * 44100 : 7 * 44100 + 22050],
                                                    whole[..., : 2 * 44100 + 22050]]))  # fmt: skip
    monkeypatch.setattr(model, "encode_text", lambda tokens: torch.stack([noise, tone]))
    timeline = classify_windows(model, recording, ["noise", "tone"], window=2.5, hop=1.25, block_seconds=1.0)
    loudest = max(timeline.rows, key=lambda row: row.probs["tone"])
    assert (loudest.start, loudest.end) == (5.0, 7.5)
    assert next(iter(timeline.rows[0].probs)) == "noise"


def test_the_clip_result_is_the_mean_or_the_max_of_the_windows(model, recording):
    mean = classify_windows(model, recording, LABELS, window=5, hop=2.5)
    top = classify_windows(model, recording, LABELS, window=5, hop=2.5, aggregate="max")
    for label in LABELS:
        per_window = [row.probs[label] for row in mean.rows]
        assert mean.clip[label] == pytest.approx(sum(per_window) / len(per_window), abs=1e-6)
        assert top.clip[label] == pytest.approx(max(per_window), abs=1e-7)
    assert list(mean.clip.values()) == sorted(mean.clip.values(), reverse=True)


def test_classify_cli_writes_the_timeline_as_csv_json_and_png(tiny_checkpoint, recording, tmp_path, capsys):
    base = ["classify", str(recording), "--labels", ",".join(LABELS), "--checkpoint", str(tiny_checkpoint),
            "--precision", "32-true", "--window", "5", "--hop", "2.5"]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "t.csv"), "--plot", str(tmp_path / "t.png")]) == 0
    out = capsys.readouterr().out
    assert "4 windows of 5 s every 2.5 s" in out and "whole file (mean over the windows)" in out
    with open(tmp_path / "t.csv") as file:
        rows = list(csv.DictReader(file))
    assert [(row["start"], row["end"]) for row in rows] == [
        ("0.000", "5.000"), ("2.500", "7.500"), ("5.000", "10.000"), ("7.300", "12.300")
    ]  # fmt: skip
    assert all(row["top1"] in LABELS and float(row["top1_prob"]) == max(float(row[x]) for x in LABELS) for row in rows)
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert main([*base, "--aggregate", "max", "--out", str(tmp_path / "t.json")]) == 0
    written = json.loads((tmp_path / "t.json").read_text())
    assert written["aggregate"] == "max" and len(written["windows"]) == 4
    assert written["clip"] == {k: max(w["probs"][k] for w in written["windows"]) for k in LABELS}


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--hop", "2"], "--hop: classify window by window with --window"),
        (["--window", "5", "--out", "t.txt"], "write the timeline as .csv or .json"),
        (["--window", "0"], "--window must be a positive number of seconds"),
        (["--window", "5", "--plot", "t.jpg"], "the plot is a .png file"),
    ],
)
def test_bad_window_options_are_one_line_before_the_model_loads(extra, message, recording, tmp_path, capsys):
    code = main(["classify", str(recording), "--labels", "dog", "--checkpoint", str(tmp_path / "none.pt"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err


def test_a_windowed_index_answers_a_search_with_the_file_and_the_time_in_it(model, recording, tmp_path):
    """`audioclip index --window`: every window is an item with its start and end; searching with the audio of the
    tone alone finds the recording at the window that holds the tone, and adding whole files to it is refused."""
    from audioclip.evaluation.index import build_index, load_index, search
    from audioclip.evaluation.timeline import InputError

    folder = tmp_path / "recordings"
    folder.mkdir()
    (folder / "long.wav").write_bytes(recording.read_bytes())
    stats = build_index(model, folder, tmp_path / "long.pt", "tiny", window=2.5, hop=2.5, progress=False)
    assert (stats["total"], stats["items"], stats["added"]) == (1, 5, 1)  # 0-2.5, 2.5-5, 5-7.5, 7.5-10, 9.8-12.3
    index = load_index(tmp_path / "long.pt")
    assert [(s, e) for s, e in zip(index["starts"], index["ends"])][2] == (5.0, 7.5)

    wave, rate = sf.read(recording, dtype="float32")
    sf.write(tmp_path / "tone.wav", wave[5 * rate : round(7.5 * rate)], rate, subtype="PCM_16")
    best = search(index, model, audio=tmp_path / "tone.wav", top=1)[0]
    assert (Path(best.path).name, best.start, best.end) == ("long.wav", 5.0, 7.5)
    assert best.score == pytest.approx(1.0, abs=1e-3)  # the same samples, resampled the same way

    with pytest.raises(InputError, match=r"the index holds windows of 2.5 s every 2.5 s, not whole files"):
        build_index(model, folder, tmp_path / "long.pt", "tiny", progress=False)
