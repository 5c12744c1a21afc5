"""`audioclip data download esc50|us8k` against a real HTTP server (the standard library's, in a thread, on a free
port) serving small archives in the official shapes: ESC-50's `master.zip` (ESC-50-master/{audio,meta}) and
UrbanSound8K's tar.gz (UrbanSound8K/{audio/fold1..10,metadata}), with real metadata rows from shared/fixtures/meta
and short synthetic clips. The server keeps a log of every request (path, Range header, bytes sent)."""

from __future__ import annotations

import csv
import hashlib
import io
import socket
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audioclip.cli import main
from audioclip.data.download import ARCHIVES, MARKER, MIRROR_ENV, archive_url
from audioclip.data.synthetic import class_sound

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------------- the archives
def _wav(target: int, sample_rate: int, seconds: float, seed: int) -> bytes:
    signal = class_sound(target, 2, seconds, sample_rate, np.random.default_rng(seed))
    buffer = io.BytesIO()
    sf.write(buffer, np.round(signal * 32767).astype(np.int16), sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _real_rows(path: Path, target_column: str, fold_column: str, folds: int) -> tuple[str, list[dict]]:
    """The header and, for classes 0 and 1, the first real row of each fold (the DataModule wants classes 0..K-1)."""
    text = path.read_text()
    rows, seen = [], set()
    for row in csv.DictReader(io.StringIO(text)):
        key = (row[target_column], row[fold_column])
        if row[target_column] in ("0", "1") and key not in seen:
            seen.add(key)
            rows.append(row)
    assert len(rows) == 2 * folds
    return text.splitlines()[0], rows


def _csv(header: str, rows: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header.split(","), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def esc50_zip(shared_dir: Path) -> bytes:
    header, rows = _real_rows(shared_dir / "fixtures/meta/esc50.csv", "target", "fold", 5)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ESC-50-master/README.md", "ESC-50\n")
        archive.writestr("ESC-50-master/meta/esc50.csv", _csv(header, rows))
        for k, row in enumerate(rows):
            archive.writestr(f"ESC-50-master/audio/{row['filename']}", _wav(int(row["target"]), 44100, 1.0, k))
    return buffer.getvalue()


def us8k_tar(shared_dir: Path) -> bytes:
    header, rows = _real_rows(shared_dir / "fixtures/meta/UrbanSound8K.csv", "classID", "fold", 10)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))

        add("UrbanSound8K/UrbanSound8K_README.txt", b"UrbanSound8K\n")
        add("UrbanSound8K/metadata/UrbanSound8K.csv", _csv(header, rows))
        for k, row in enumerate(rows):
            add(f"UrbanSound8K/audio/fold{row['fold']}/{row['slice_file_name']}",
                _wav(int(row["classID"]), 22050, 0.5, k))  # fmt: skip
    return buffer.getvalue()


def md5(data: bytes) -> str:
    return "md5:" + hashlib.md5(data).hexdigest()


@pytest.fixture(scope="module")
def archives(shared_dir):
    return {"esc50": esc50_zip(shared_dir), "us8k": us8k_tar(shared_dir)}


def download(capsys, name: str, root: Path, *args: str) -> tuple[int, str, str]:
    code = main(["data", "download", name, "--root", str(root), "--no-progress", *args])
    out, err = capsys.readouterr()
    return code, out, err


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# ------------------------------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("name", ["esc50", "us8k"])
def test_download_verifies_unpacks_into_the_layout_and_the_datamodule_reads_a_batch(
    name, server, archives, tmp_path, capsys
):
    from audioclip.data import ESC50DataModule, US8KDataModule

    server.serve(archive_url(ARCHIVES[name]), archives[name])
    root = tmp_path / "data" / name
    code, out, err = download(capsys, name, root, "--known-hash", md5(archives[name]))
    assert code == 0, err
    clips = 10 if name == "esc50" else 20
    assert f"{clips} clips (the official release has" in out and "2 classes" in out
    marker = (root / MARKER).read_text()
    assert md5(archives[name]) in marker
    # the archive's top folder is the root, nothing else is left beside it (no staging folder, no archive)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [name]
    wavs = [p.relative_to(root / "audio") for p in (root / "audio").rglob("*.wav")]
    assert len(wavs) == clips and all(len(p.parts) == (1 if name == "esc50" else 2) for p in wavs)

    module = {"esc50": ESC50DataModule, "us8k": US8KDataModule}[name]
    dm = module(root, fold=1, batch_size=2, num_workers=0, val_fraction=0.25, progress=False)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    shape = (2, 1, 220500) if name == "esc50" else (2, 2, 176400)
    assert tuple(batch["audio"].shape) == shape
    names = {"esc50": {"dog", "rooster"}, "us8k": {"air conditioner", "car horn"}}[name]
    assert set(batch["text"]) <= names


def test_an_interrupted_transfer_continues_with_a_range_request(server, archives, tmp_path, capsys):
    server.serve(archive_url(ARCHIVES["us8k"]), archives["us8k"])
    path = next(iter(server.files))
    server.cut_once.add(path)
    root = tmp_path / "data" / "us8k"
    code, _, err = download(capsys, "us8k", root, "--known-hash", md5(archives["us8k"]), "--retries", "0")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "the transfer stopped after" in err and "run the same command again" in err
    assert not root.exists()
    part = tmp_path / "data" / ".us8k.download" / "UrbanSound8K.tar.gz.part"
    have = part.stat().st_size
    assert 0 < have < len(archives["us8k"])

    code, _, err = download(capsys, "us8k", root, "--known-hash", md5(archives["us8k"]))
    assert code == 0, err
    first, second = server.log
    assert second["range"] == f"bytes={have}-"
    assert second["sent"] == len(archives["us8k"]) - have < len(archives["us8k"])
    assert (root / "metadata" / "UrbanSound8K.csv").is_file() and not part.exists()


def test_a_server_that_ignores_the_range_still_gives_the_right_archive(server, archives, tmp_path, capsys):
    server.serve(archive_url(ARCHIVES["esc50"]), archives["esc50"])
    server.cut_once.add(next(iter(server.files)))
    server.ignore_range = True
    root = tmp_path / "data" / "esc50"
    assert download(capsys, "esc50", root, "--known-hash", md5(archives["esc50"]), "--retries", "0")[0] == 2
    code, _, err = download(capsys, "esc50", root, "--known-hash", md5(archives["esc50"]))
    assert code == 0, err
    assert server.log[1]["range"] is not None and server.log[1]["sent"] == len(archives["esc50"])


def test_a_corrupted_archive_is_refused_and_nothing_is_left_under_data(server, archives, tmp_path, capsys):
    corrupted = bytearray(archives["esc50"])
    corrupted[len(corrupted) // 2] ^= 0xFF
    server.serve(archive_url(ARCHIVES["esc50"]), bytes(corrupted))
    data = tmp_path / "data"
    code, _, err = download(capsys, "esc50", data / "esc50", "--known-hash", md5(archives["esc50"]))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"the archive's checksum is {md5(bytes(corrupted))}, expected {md5(archives['esc50'])}" in err
    assert tree(data) == []


def test_an_archive_whose_audio_does_not_match_its_metadata_is_refused_with_nothing_left(tmp_path, capsys, archives):
    with zipfile.ZipFile(io.BytesIO(archives["esc50"])) as full:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as short:
            for member in full.infolist()[:-1]:  # the last clip left out
                short.writestr(member, full.read(member))
    archive = tmp_path / "ESC-50-master.zip"
    archive.write_bytes(buffer.getvalue())
    data = tmp_path / "data"
    code, _, err = download(capsys, "esc50", data / "esc50", "--archive", str(archive),
                            "--known-hash", md5(buffer.getvalue()))  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "the metadata lists 10 clips and audio/ holds 9 .wav files (1 listed ones missing" in err
    assert tree(data) == []


def test_a_second_run_sends_no_request(server, archives, tmp_path, capsys):
    server.serve(archive_url(ARCHIVES["esc50"]), archives["esc50"])
    root = tmp_path / "data" / "esc50"
    assert download(capsys, "esc50", root, "--known-hash", md5(archives["esc50"]))[0] == 0
    requests_before = len(server.log)
    code, out, _ = download(capsys, "esc50", root, "--known-hash", md5(archives["esc50"]))
    assert code == 0 and "already here" in out and "nothing to do" in out
    assert len(server.log) == requests_before == 1


def test_no_network_is_one_line_naming_the_url_checksum_and_archive_setting(monkeypatch, tmp_path, capsys):
    with socket.socket() as probe:  # a free port, closed again: nobody listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv(MIRROR_ENV, f"http://127.0.0.1:{port}/")
    code, _, err = download(capsys, "us8k", tmp_path / "data" / "us8k")
    assert code == 2 and len(err.strip().splitlines()) == 1
    url = f"http://127.0.0.1:{port}/record/1203745/files/UrbanSound8K.tar.gz?download=1"
    assert url in err and "md5:9aa69802bbf37fb986f71ec1483a196e" in err
    assert "make data-us8k ARCHIVE=" in err and "Connection refused" in err
    assert tree(tmp_path / "data") == []


def test_make_data_esc50_takes_an_archive_the_user_has_and_refuses_a_wrong_one(archives, tmp_path):
    import os
    import subprocess
    import sys

    archive = tmp_path / "ESC-50-master.zip"
    archive.write_bytes(archives["esc50"])
    venv = str(Path(sys.executable).parent.parent)

    def make(root: Path, known: str) -> subprocess.CompletedProcess:
        return subprocess.run(["make", "--no-print-directory", f"VENV={venv}", "data-esc50", f"DATA={root}",
                               f"ARCHIVE={archive}", f"ARGS=--known-hash {known} --no-progress"], cwd=ROOT,
                              capture_output=True, text=True, env={**os.environ, MIRROR_ENV: "http://127.0.0.1:9/"},
                              timeout=300)  # fmt: skip

    wrong = make(tmp_path / "data" / "esc50", "md5:" + "0" * 32)
    assert wrong.returncode != 0 and "audioclip: error:" in wrong.stderr and "nothing was unpacked" in wrong.stderr
    assert tree(tmp_path / "data") == []
    done = make(tmp_path / "data" / "esc50", md5(archives["esc50"]))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "data" / "esc50" / "meta" / "esc50.csv").is_file() and archive.is_file()
