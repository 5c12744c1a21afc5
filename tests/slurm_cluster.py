"""A real one-node Slurm for tests: `tools/slurm-local` brings munge, slurmctld and slurmd up on this machine (and
down again when it was the one that started them); jobs go through `sbatch`, are watched with `scontrol show job`
(accounting is off without slurmdbd, so `sacct` knows nothing) and run the worktree's `.venv`.

Where the cluster cannot start (not root, `slurm-wlm` / `munge` not installed) the test is skipped with the one line
`tools/slurm-local` printed, which says what to install.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "slurm-local"
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL"}


@contextmanager
def slurm() -> Iterator[dict[str, str]]:
    """The environment that points Slurm's commands at the one-node cluster, which is up inside the block."""
    # `tools/slurm-local env` prints `export SLURM_CONF=<its slurm.conf>`
    conf = subprocess.run([TOOL, "env"], capture_output=True, text=True, check=True).stdout.split("=", 1)[1].strip()
    env = {**os.environ, "SLURM_CONF": conf}
    started = subprocess.run([TOOL, "status"], env=env).returncode != 0
    if started:
        up = subprocess.run([TOOL, "up"], env=env, capture_output=True, text=True)
        if up.returncode == 3:
            pytest.skip(up.stderr.strip().splitlines()[-1])
        assert up.returncode == 0, up.stderr
    try:
        yield env
    finally:
        if started:
            subprocess.run([TOOL, "down"], env=env, capture_output=True)


def audioset_sbatch_env(base: Mapping[str, str], tmp_path: Path, videos: Path, segments: Path) -> dict[str, str]:
    """``base`` plus what docs/audioset-slurm.sbatch reads, for the test set ``videos``/``segments``: 2 shards, 30 %
    held out, parts under ``tmp_path/out``, node-local work under ``tmp_path/node-local``, this venv's `audioclip`."""
    return {
        **base,
        "SEGMENTS": str(segments),
        "OUT": str(tmp_path / "out"),
        "NUM_SHARDS": "2",
        "WORK": str(tmp_path / "node-local"),
        "VAL_FRACTION": "0.3",
        "AUDIOCLIP": str(Path(sys.executable).with_name("audioclip")),
        "EXTRA": f"--clips {videos}",
    }


def sbatch(env: dict[str, str], *args: str, cwd: Path | None = None) -> str:
    """Submit through `sbatch --parsable`; the job id."""
    done = subprocess.run(["sbatch", "--parsable", *args], env=env, cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0]


def jobs(env: dict[str, str], job_id: str) -> list[dict[str, str]]:
    """`scontrol show job` of every task of an array job (or of the one job), each a dict: JobState, Restarts,
    ExitCode, StartTime, ..."""
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], env=env, capture_output=True, text=True).stdout
    return [dict(token.partition("=")[::2] for token in line.split()) for line in out.strip().splitlines()]


def wait_until(env: dict[str, str], job_id: str, states: set[str], timeout: float = 600) -> dict[str, str]:
    """Poll until every task of the job is in one of `states` (or finished: a test then says what it expected)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tasks = jobs(env, job_id)
        if tasks and all(t.get("JobState") in states | FINISHED for t in tasks):
            return tasks[0]
        time.sleep(1)
    pytest.fail(f"job {job_id} not in {sorted(states)} after {timeout:.0f} s: {jobs(env, job_id)}")
