"""`audioclip prepare audioset shards --distributor ray` on a real two-node Ray cluster (`ray start --head` and a
`ray start --address=...` worker, tests/ray_cluster.py) whose worker node is killed while it runs a shard task.

The distributor joins with `--ray-address` (`ray.init(address=...)`); the dead node's task is retried on the head, the
parts and merged indexes equal a one-process run's byte for byte, and nothing half-written is left in the output.
"""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from ray_cluster import ray_cluster

from audioclip.data.audioset.parts import list_parts
from audioclip.data.audioset.testmedia import write_test_set

pytestmark = pytest.mark.cluster

AUDIOCLIP = str(Path(sys.executable).with_name("audioclip"))
SHARDS = 4


def _shards(segments: Path, videos: Path, work: Path, out: Path, *distributor: str) -> list[str]:
    return [
        AUDIOCLIP, "prepare", "audioset", "shards", "--segments", str(segments), "--clips", str(videos),
        "--root", str(work), "--out", str(out), "--num-shards", str(SHARDS), "--workers", "1",
        "--val-fraction", "0.3", *distributor,
    ]  # fmt: skip


def _files(out: Path) -> dict[str, bytes]:
    """Every file of the training data under `out` (the splits: parts and merged indexes), by relative path; a
    LitData index without the time LitData wrote it (`updated_at`), everything else as it is on disk."""
    files = {}
    for path in sorted(p for split in ("train", "val") for p in (out / split).rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.name == "index.json":
            data = json.dumps({k: v for k, v in json.loads(data).items() if k != "updated_at"}).encode()
        files[str(path.relative_to(out))] = data
    return files


def test_a_worker_node_killed_mid_shard_is_retried_and_the_output_equals_one_process(tmp_path: Path) -> None:
    videos, segments = write_test_set(tmp_path / "media", 16)
    local = subprocess.run(_shards(segments, videos, tmp_path / "work-local", tmp_path / "out-local"),
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert local.returncode == 0, local.stderr[-3000:]

    with tempfile.TemporaryDirectory(prefix="ray-", dir="/tmp") as ray_dir, ray_cluster(Path(ray_dir)) as cluster:
        out = tmp_path / "out"
        run = subprocess.Popen(
            _shards(segments, videos, tmp_path / "work", out, "--distributor", "ray", "--ray-address", cluster.address),
            env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 300
        while not cluster.worker_tasks("shard_task"):
            assert run.poll() is None and time.monotonic() < deadline, "no shard task ever ran on the worker node"
            time.sleep(0.05)
        killed = cluster.kill_worker_node()
        stdout, stderr = run.communicate(timeout=600)
    assert killed and not [pid for pid in killed if Path(f"/proc/{pid}").exists()]  # the node is gone for good

    assert run.returncode == 0, stderr[-4000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["done"] == SHARDS and summary["failed"] == {}, summary
    # chunks byte for byte (indexes but for their write time), and no extra (half-written) file
    assert _files(out) == _files(tmp_path / "out-local")
    for split in ("train", "val"):
        assert list_parts(out / split) == [f"{i}-of-{SHARDS}" for i in range(SHARDS)]
    assert sorted(p.name for p in (out / "stats").iterdir()) == [f"{i}-of-{SHARDS}.json" for i in range(SHARDS)]
