"""AudioSet preparation into a real object store: moto's S3 server over HTTP, reached only through AWS_ENDPOINT_URL
and credentials in the environment, as a user's MinIO or S3 is.

`make data-audioset AUDIOSET_ROOT=s3://...` packs its parts and merges them into the bucket; a missing bucket, refused
credentials and an endpoint that goes away mid-upload each end the command with one line (`audioclip: error: ...`,
exit 2) and never leave a half-written part listed as complete. Each command runs as a subprocess, as a user runs it.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from s3_server import FlakyEndpoint, running_s3
from test_cluster_scale import samples

from audioclip.data.audioset.parts import list_parts
from audioclip.data.audioset.testmedia import write_test_set

ROOT = Path(__file__).resolve().parents[3]
AUDIOCLIP = str(Path(sys.executable).with_name("audioclip"))


@pytest.fixture(scope="module")
def s3():
    with running_s3() as server:
        server.create_bucket("bucket")
        yield server


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict:
    videos, segments = write_test_set(tmp_path_factory.mktemp("media"), 8)  # clips 2 and 3 are broken on purpose
    return {"videos": videos, "segments": segments}


def _run(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, env={**os.environ, **env}, cwd=cwd, capture_output=True, text=True, timeout=300)


def _prepare_all(media: dict, root: str, work: Path) -> list[str]:
    return [
        AUDIOCLIP, "prepare", "audioset", "all", "--segments", str(media["segments"]), "--root", root,
        "--clips", str(media["videos"]), "--val-fraction", "0.3", "--workers", "1", "--work", str(work),
    ]  # fmt: skip


def _error_line(done: subprocess.CompletedProcess) -> str:
    """The one line `audioclip` printed for a bad setting; fails on a traceback or several lines."""
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("audioclip: error:")]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    return lines[0]


def test_data_audioset_into_a_bucket_holds_what_a_local_run_packs(s3, media: dict, tmp_path: Path) -> None:
    """`make data-audioset AUDIOSET_ROOT=s3://bucket/audioset`: its parts and merged train/val in the bucket hold
    the samples of the same run into a local folder, byte for byte; no local folder named `s3:` appears."""
    common = [
        f"AUDIOSET_SEGMENTS={media['segments']}", f"AUDIOSET_CLIPS={media['videos']}", "AUDIOSET_VAL_FRACTION=0.3",
    ]  # fmt: skip
    make = ["make", "--no-print-directory", "-C", str(ROOT), "data-audioset"]
    done = _run([*make, *common, "AUDIOSET_ROOT=s3://bucket/audioset", f"ARGS=--workers 1 --work {tmp_path / 'work'}"],
                s3.env, tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    local = tmp_path / "local"
    done = _run([*make, *common, f"AUDIOSET_ROOT={local}", "ARGS=--workers 1"], s3.env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    keys = s3.keys("bucket", "audioset/shards/")
    assert {"audioset/shards/train/index.json", "audioset/shards/val/index.json"} <= set(keys)
    assert "audioset/shards/train/parts/0-of-1/index.json" in keys and "audioset/shards/stats/0-of-1.json" in keys
    for split in ("train", "val"):
        from_bucket = samples(f"s3://bucket/audioset/shards/{split}")
        assert from_bucket == samples(local / "shards" / split) and len(from_bucket) > 0, split
    assert not list(tmp_path.rglob("s3:*")) and not list(ROOT.glob("s3:*"))


def test_a_missing_bucket_is_one_line_before_any_clip_is_touched(s3, media: dict, tmp_path: Path) -> None:
    done = _run(_prepare_all(media, "s3://no-such-bucket/audioset", tmp_path / "work"), s3.env, tmp_path)
    line = _error_line(done)
    assert "no-such-bucket" in line and "does not exist" in line
    assert not (tmp_path / "work").exists()  # checked before a clip was ingested or extracted


def test_refused_credentials_are_one_line_naming_the_settings(s3, media: dict, tmp_path: Path) -> None:
    with s3.require_known_keys():
        done = _run(_prepare_all(media, "s3://bucket/refused", tmp_path / "work"), s3.env, tmp_path)
    line = _error_line(done)
    assert "access denied" in line and "AWS_ACCESS_KEY_ID" in line and "s3://bucket/refused" in line
    assert not (tmp_path / "work").exists()


def test_an_endpoint_gone_mid_upload_leaves_no_part_listed_complete(s3, media: dict, tmp_path: Path) -> None:
    """The endpoint vanishes when the first chunk of a part is being uploaded: one line, exit 2, and neither that
    part nor a merged index is there to be read as complete."""
    flaky = FlakyEndpoint(("127.0.0.1", s3.port), fail_at=r"^PUT /bucket/cut/shards/train/parts/[^ ]*/chunk-")
    env = {**s3.env, "AWS_ENDPOINT_URL": flaky.endpoint}
    done = _run(_prepare_all(media, "s3://bucket/cut", tmp_path / "work"), env, tmp_path)
    assert flaky.gone.is_set(), done.stderr[-3000:]
    line = _error_line(done)
    assert "does not answer" in line and "AWS_ENDPOINT_URL" in line
    keys = s3.keys("bucket", "cut/")
    assert list_parts("s3://bucket/cut/shards/train") == [], keys
    finished = ("shards/train/index.json", "shards/val/index.json", "stats/0-of-1.json")
    assert not [k for k in keys if k.endswith(finished)], keys
