"""A real two-node Ray cluster on this machine for tests: `ray start --head` and a second `ray start --address=...`
worker node, each in its own process group (`--block`, so the group is the node), with one CPU each. As Ray 2.5x's
clusters do by default, it authenticates with a token; nodes and drivers get it as users give it, in `RAY_AUTH_TOKEN`.

`RayCluster.kill_worker_node()` SIGKILLs the worker node's whole process tree (its raylet, object store and task
workers), as a machine that vanishes; `worker_tasks(name)` lists the worker node's processes running a task of that
name (Ray names a busy worker process `ray::<function>`).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from s3_server import free_port

RAY = str(Path(sys.executable).with_name("ray"))
NODE = ["--num-cpus=1", "--object-store-memory=100000000", "--block", "--disable-usage-stats"]


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    return children


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it."""
    tree, found, todo = _children(), [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += tree.get(current, [])
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class RayCluster:
    def __init__(self, temp_dir: Path) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **token}
        self.temp_dir = temp_dir
        self.head: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None

    def _start(self, *args: str, log: str) -> subprocess.Popen:
        out = open(self.temp_dir / log, "w")  # noqa: SIM115 - the node writes to it for its lifetime
        return subprocess.Popen([RAY, "start", *args, *NODE], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip

    def start(self) -> RayCluster:
        self.head = self._start("--head", f"--port={self.port}", "--node-ip-address=127.0.0.1",
                                "--include-dashboard=false", f"--temp-dir={self.temp_dir}", log="head.log")  # fmt: skip
        self._wait_for_nodes(1)
        self.worker = self._start(f"--address={self.address}", "--node-ip-address=127.0.0.1", log="worker.log")
        self._wait_for_nodes(2)
        return self

    def alive_nodes(self) -> int:
        done = subprocess.run([RAY, "status", f"--address={self.address}"], env=self.env, capture_output=True,
                              text=True, timeout=60)  # fmt: skip
        active = done.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
        return sum(1 for line in active.splitlines() if "node_" in line)

    def _wait_for_nodes(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.alive_nodes() >= count:
                return
            time.sleep(1)
        logs = "\n".join(p.read_text()[-2000:] for p in self.temp_dir.glob("*.log"))
        pytest.fail(f"Ray did not reach {count} node(s) in {timeout:.0f} s:\n{logs}")

    def worker_tasks(self, name: str) -> list[int]:
        assert self.worker is not None
        return [pid for pid in descendants(self.worker.pid) if _cmdline(pid).startswith(f"ray::{name}")]

    def kill_worker_node(self) -> list[int]:
        """SIGKILL the worker node's processes; their ids."""
        assert self.worker is not None
        return self._kill(self.worker)

    def _kill(self, node: subprocess.Popen) -> list[int]:
        tree = descendants(node.pid)
        try:
            os.killpg(node.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in tree:  # anything that left the group
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        node.wait(timeout=30)
        return tree

    def stop(self) -> None:
        for node in (self.worker, self.head):
            if node is not None and node.poll() is None:
                self._kill(node)


@contextmanager
def ray_cluster(temp_dir: Path) -> Iterator[RayCluster]:
    """A head and a worker node, both gone again after the block."""
    if shutil.which(RAY) is None and not Path(RAY).is_file():
        pytest.skip("the Ray tests need Ray's command line: make install (Ray is in the test extra)")
    cluster = RayCluster(temp_dir)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
