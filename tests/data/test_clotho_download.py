"""`audioclip data download clotho` against a real HTTP server (tests/archive_server.py, in a thread)
serving a small Clotho evaluation split in the official shapes: `clotho_captions_evaluation.csv` (file_name and five
captions) and `clotho_audio_evaluation.7z` (an `evaluation/` folder of .wav files, written with py7zr)."""

from __future__ import annotations

import csv
import hashlib
import io

import numpy as np
import pytest
import soundfile as sf
from archive_server import ArchiveServer

from audioclip.cli import main
from audioclip.data.captions import CLOTHO_RECORD, read_clotho
from audioclip.data.download import MARKER, MIRROR_ENV, DownloadError

py7zr = pytest.importorskip("py7zr", reason="Clotho's audio is 7z: `make install` (the test extra has py7zr)")

NAMES = ["river stream.wav", "birds at dawn.wav", "door creak 2.wav"]


def captions_csv(names: list[str]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["file_name", *(f"caption_{k}" for k in range(1, 6))])
    for name in names:
        writer.writerow([name, *(f"{name[:-4]} caption {k}" for k in range(1, 6))])
    return out.getvalue().encode()


def audio_7z(names: list[str], tmp_path) -> bytes:
    path = tmp_path / "clotho_audio_evaluation.7z"
    with py7zr.SevenZipFile(path, "w") as archive:
        for k, name in enumerate(names):
            wave = io.BytesIO()
            sf.write(wave, np.random.default_rng(k).uniform(-0.5, 0.5, 4410).astype(np.float32), 44100,
                     format="WAV", subtype="PCM_16")  # fmt: skip
            archive.writestr(wave.getvalue(), f"evaluation/{name}")
    return path.read_bytes()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def serve(server: ArchiveServer, name: str, data: bytes) -> None:
    server.serve(f"{CLOTHO_RECORD}/files/{name}?download=1", data)


@pytest.fixture
def split(server, tmp_path, monkeypatch):
    """The evaluation split served at its official paths, its md5s in place of the record's."""
    files = {
        "clotho_captions_evaluation.csv": captions_csv(NAMES),
        "clotho_audio_evaluation.7z": audio_7z(NAMES, tmp_path),
    }
    for name, data in files.items():
        serve(server, name, data)
    monkeypatch.setattr(
        "audioclip.data.clotho_download.CLOTHO_FILES", {"test": [(n, md5(d)) for n, d in files.items()]}
    )
    return files


def test_make_data_clotho_fetches_verifies_and_unpacks_the_evaluation_split_and_a_rerun_fetches_nothing(
    split, server, tmp_path, capsys
):
    root = tmp_path / "data" / "clotho"
    assert main(["data", "download", "clotho", "--split", "test", "--root", str(root), "--no-progress"]) == 0
    assert "test (evaluation): 3 clips, 15 captions" in capsys.readouterr().out
    assert sorted(p.name for p in (root / "evaluation").iterdir()) == sorted(NAMES)
    clips = read_clotho(root, "test")
    assert [c.captions[4] for c in clips] == [f"{n[:-4]} caption 5" for n in NAMES]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["clotho"]  # no staging or download folder left
    assert (root / MARKER).is_file()

    requests = len(server.log)
    assert main(["data", "download", "clotho", "--split", "test", "--root", str(root), "--no-progress"]) == 0
    assert len(server.log) == requests


def test_an_archive_that_lacks_a_listed_clip_is_refused_and_nothing_is_moved_into_place(split, server, tmp_path):
    serve(server, "clotho_audio_evaluation.7z", short := audio_7z(NAMES[:2], tmp_path))
    from audioclip.data import clotho_download

    clotho_download.CLOTHO_FILES["test"][1] = ("clotho_audio_evaluation.7z", md5(short))
    root = tmp_path / "data" / "clotho"
    with pytest.raises(DownloadError, match=r"holds 2 .wav files, clotho_captions_evaluation.csv lists 3 \(1 missing, "
                                            r"first door creak 2.wav\); nothing was moved"):  # fmt: skip
        clotho_download.download_clotho(root, ["test"], progress=False)
    assert not (root / "evaluation").exists()
    assert not any(p.name.endswith(".unpacking") for p in (tmp_path / "data").iterdir())


def test_a_checksum_mismatch_is_one_line_and_leaves_no_audio(split, server, tmp_path, capsys):
    serve(server, "clotho_audio_evaluation.7z", audio_7z(NAMES[::-1], tmp_path) + b"tampered")
    root = tmp_path / "data" / "clotho"
    assert main(["data", "download", "clotho", "--split", "test", "--root", str(root), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "clotho_audio_evaluation.7z" in err and "expected md5:" in err
    assert not (root / "evaluation").exists()


def test_files_you_already_have_are_verified_and_unpacked_without_the_network(split, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(MIRROR_ENV, "http://127.0.0.1:9")  # nothing listens: a request would fail
    for name, data in split.items():
        (tmp_path / name).write_bytes(data)
    root = tmp_path / "clotho"
    argv = ["data", "download", "clotho", "--split", "test", "--root", str(root), "--no-progress"]
    argv += [a for name in split for a in ("--archive", str(tmp_path / name))]
    assert main(argv) == 0
    assert len(read_clotho(root, "test")) == 3
    assert all((tmp_path / name).is_file() for name in split)  # the user's own files are kept
