"""Clotho and AudioCaps in their official layouts: the readers, the splits, the captions of every clip, AudioCaps
audio through the AudioSet downloader (ingest of a local copy, and yt-dlp over file:// with a whole video's
offset), bad layouts named in one line."""

from __future__ import annotations

import csv
import functools
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import soundfile as sf
from caption_datasets import (
    audiocaps_id,
    captions_of,
    write_audiocaps_copy,
    write_audiocaps_csv,
    write_clotho,
)

from audioclip.data.captions import (
    CaptionDataModule,
    clotho_downloads,
    decode_media_clip,
    fetch_audiocaps,
    read_audiocaps,
    read_audiocaps_segments,
    read_clotho,
)
from audioclip.data.errors import DatasetNotFoundError, MetadataError
from audioclip.data.provenance import data_kind


def test_clotho_reader_gives_every_clip_its_five_captions_in_the_official_split(tmp_path):
    root = write_clotho(tmp_path / "clotho")
    test = read_clotho(root, "test")
    assert [clip.id for clip in test] == [f"evaluation sound {k}.wav" for k in range(3)]
    assert test[2].captions == tuple(captions_of("test", 2)) and test[2].path == root / "evaluation" / test[2].id
    assert [len(read_clotho(root, split)) for split in ("train", "val")] == [4, 2]


def test_clotho_layout_errors_name_the_file_and_the_problem(tmp_path):
    root = write_clotho(tmp_path / "clotho", {"test": 2})
    with pytest.raises(DatasetNotFoundError, match=r"development: Clotho audio folder does not exist \(unpack "
                                                   r"clotho_audio_development.7z from https://zenodo.org/record/4783391"):
        read_clotho(root, "train")  # fmt: skip
    path = root / "clotho_captions_evaluation.csv"
    rows = list(csv.reader(path.open()))
    rows[2][4] = " "
    csv.writer(path.open("w", newline="")).writerows(rows)
    with pytest.raises(MetadataError, match=r"clotho_captions_evaluation.csv: line 3: empty caption_4 for "
                                            r"'evaluation sound 1.wav'$"):
        read_clotho(root, "test")  # fmt: skip
    path.write_text("file_name,caption_1\nx.wav,a\n")
    missing = r"missing column\(s\) \['caption_2', 'caption_3', 'caption_4', 'caption_5'"
    with pytest.raises(MetadataError, match=missing):
        read_clotho(root, "test")
    with pytest.raises(ValueError, match="split must be one of train, val, test, got 'evaluation'"):
        read_clotho(root, "evaluation")


def test_clotho_download_entry_names_the_zenodo_files_and_md5s():
    (audio, audio_url, audio_md5), (captions, _, captions_md5) = clotho_downloads("test")
    assert audio == "clotho_audio_evaluation.7z" and audio_md5 == "4569624ccadf96223f19cb59fe4f849f"
    assert audio_url == "https://zenodo.org/record/4783391/files/clotho_audio_evaluation.7z?download=1"
    assert captions == "clotho_captions_evaluation.csv" and captions_md5 == "1b16b9e57cf7bdb7f13a13802aeb57e2"


def test_audiocaps_rows_become_one_clip_with_its_captions_in_audiocap_id_order(tmp_path):
    write_audiocaps_csv(tmp_path, "test", clips=3)  # rows written in reverse order
    segments = read_audiocaps_segments(tmp_path, "test")
    assert [s.youtube_id for s in segments] == [audiocaps_id(k) for k in (2, 1, 0)]
    assert segments[0].captions == tuple(captions_of("test", 2)) and segments[0].start == 30.0
    (tmp_path / "test.csv").write_text("audiocap_id,youtube_id,start_time,caption\n1,abc,30,a dog\n")
    with pytest.raises(MetadataError, match="test.csv: line 2: 'youtube_id' must be an 11-character YouTube id, got"):
        read_audiocaps_segments(tmp_path, "test")


def test_audiocaps_audio_is_ingested_through_the_audioset_stage_and_missing_clips_are_counted(tmp_path):
    root = tmp_path / "audiocaps"
    write_audiocaps_csv(root, "test", clips=4)
    copy = write_audiocaps_copy(tmp_path / "copy", range(3))  # clip 3 is gone from YouTube
    assert fetch_audiocaps(root, "test", clips=copy) == {"clips": 4, "with_audio": 3}
    clips, missing = read_audiocaps(root, "test")
    assert sorted(clip.id for clip in clips) == [f"{audiocaps_id(k)}_30" for k in range(3)]
    assert missing == [f"{audiocaps_id(3)}_30"] and data_kind(root) == "synthetic"
    assert all(clip.offset == 0.0 and clip.captions == tuple(captions_of("test", int(clip.id[4:11])))
               for clip in clips)  # fmt: skip


def test_audiocaps_without_any_fetched_clip_says_how_to_fetch(tmp_path):
    write_audiocaps_csv(tmp_path, "test", clips=2)
    with pytest.raises(DatasetNotFoundError, match=r"none of the 2 AudioCaps test clips has audio here; fetch them "
                                                   r"with `audioclip captions fetch audiocaps --root"):
        read_audiocaps(tmp_path, "test")  # fmt: skip


def test_a_whole_video_is_cut_at_its_segment_offset(tmp_path):
    # 1 s of silence, then a tone: the clip that starts 1 s in is the tone, from its first sample
    rate = 16000
    signal = np.concatenate([np.zeros(rate), 0.5 * np.sin(np.arange(rate) / 5)]).astype(np.float32)
    sf.write(tmp_path / "video.wav", signal, rate)
    clip = decode_media_clip(tmp_path / "video.wav", {str(tmp_path / "video.wav"): 1.0}, channels=2, length=44100)
    assert clip.shape == (2, 44100) and np.abs(clip[:, :4410]).max() > 8000  # the tone, not the silence
    whole = decode_media_clip(tmp_path / "video.wav", {}, channels=1, length=44100)
    assert np.abs(whole[:, :40000]).max() < 50  # no offset: the silence first


def test_audiocaps_download_runs_yt_dlp_and_reads_a_whole_video_from_its_offset(tmp_path):
    """A whole 'video' (a WAV file served over file://, as tests/data/audioset/test_youtube_download.py does) downloaded
    with sections off: the AudioSet stage records the segment's start as its offset, and the reader applies it."""
    root = tmp_path / "audiocaps"
    write_audiocaps_csv(root, "test", clips=1, start=1)
    site = tmp_path / "site"
    site.mkdir()
    rate = 16000
    signal = np.concatenate([np.zeros(rate), 0.5 * np.sin(np.arange(2 * rate) / 5)]).astype(np.float32)
    sf.write(site / f"{audiocaps_id(0)}.wav", signal, rate)
    counts = fetch_audiocaps(root, "test", url_template=f"file://{site}/{{ytid}}.wav", sections=False, workers=1)
    assert counts == {"clips": 1, "with_audio": 1}
    (clip,), _ = read_audiocaps(root, "test")
    assert clip.offset == 1.0
    audio = decode_media_clip(clip.path, {str(clip.path): clip.offset}, channels=1, length=44100)
    assert np.abs(audio[:, :4410]).max() > 8000


@pytest.fixture()
def csv_server(tmp_path):
    site = tmp_path / "site"
    write_audiocaps_csv(site, "test", clips=2)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(SimpleHTTPRequestHandler, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/test.csv"
    server.shutdown()


def test_the_audiocaps_csv_is_downloaded_over_http_when_it_is_not_there(tmp_path, csv_server):
    root = tmp_path / "audiocaps"
    copy = write_audiocaps_copy(tmp_path / "copy", range(2))
    assert fetch_audiocaps(root, "test", clips=copy, csv_url=csv_server) == {"clips": 2, "with_audio": 2}
    assert (root / "test.csv").read_text() == (tmp_path / "site" / "test.csv").read_text()
    with pytest.raises(DatasetNotFoundError, match="could not download the AudioCaps val CSV"):
        fetch_audiocaps(root, "val", clips=copy, csv_url=csv_server.replace("test.csv", "val.csv"))


def test_clotho_datamodule_trains_on_a_caption_per_epoch_and_evaluates_the_test_split(tmp_path):
    root = write_clotho(tmp_path / "clotho")
    dm = CaptionDataModule("clotho", root, clip_seconds=1.0, batch_size=2, num_workers=0, progress=False)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (4, 2, 3) and dm.task == "caption"
    drawn = {dm.train_set[(0, seed)]["text"] for seed in range(10)}
    assert drawn == set(captions_of("train", 0))  # every caption of the clip, over the epochs
    assert dm.train_set[(0, 3)]["text"] == dm.train_set[(0, 3)]["text"]  # the seed decides
    item = dm.test_set[1]
    assert item["audio"].shape == (1, 44100) and item["text"] == captions_of("test", 1)[0]
    assert dm.caption_texts(item["target"]) == tuple(captions_of("test", 1))
    evaluation = CaptionDataModule("clotho", root, splits=("test",), num_workers=0, progress=False).evaluation_set()
    assert evaluation.ids == [f"evaluation sound {k}.wav" for k in range(3)]


def test_captions_command_fetches_audiocaps_from_a_copy_and_checks_both_layouts(tmp_path, capsys):
    from audioclip.cli import main

    root = tmp_path / "audiocaps"
    write_audiocaps_csv(root, "test", clips=3)
    copy = write_audiocaps_copy(tmp_path / "copy", range(2))
    assert main(["captions", "fetch", "audiocaps", "--root", str(root), "--clips", str(copy)]) == 0
    assert f"AudioCaps test: 2 of 3 clips have audio in {root}" in capsys.readouterr().out
    assert main(["captions", "check", "audiocaps", "--root", str(root), "--split", "test"]) == 0
    assert capsys.readouterr().out == "audiocaps test: 3 clips, 10 captions, 1 without audio\n"
    clotho = write_clotho(tmp_path / "clotho", {"test": 2})
    assert main(["captions", "check", "clotho", "--root", str(clotho)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"Clotho train: not here; `make data-clotho SPLITS=train DATA={clotho}` downloads it "
                               "(clotho_audio_development.7z (md5 c8b05bc7")
    assert lines[2] == "clotho test: 2 clips, 10 captions, 0 without audio"
    assert main(["captions", "check", "audiocaps", "--root", str(tmp_path / "none"), "--split", "val"]) == 2
    assert "val.csv: AudioCaps caption file does not exist" in capsys.readouterr().err


def test_captions_help_imports_nothing_heavy():
    probe = "import sys\nfrom audioclip.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n" \
        "print(sorted(m for m in ('torch', 'lightning', 'av') if m in sys.modules))"  # fmt: skip
    for argv in (["captions", "--help"], ["captions", "fetch", "--help"], ["evaluate", "query", "--help"]):
        done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=120)
        assert done.stdout.strip().splitlines()[-1] == "[]", (argv, done.stdout[-300:])
