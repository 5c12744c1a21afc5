"""Fixtures shared by every test module."""

import os
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only shared material (``shared/fixtures``) next to the repository root, or at $AUDIOCLIP_SHARED
    (`make mutation` runs the tests from a copy of the repository in mutants/)."""
    path = Path(os.environ.get("AUDIOCLIP_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
    if not path.is_dir():
        pytest.fail(f"shared material not found at {path}: the tests need the 'shared' folder next to the repository")
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A state dict of the tiny AudioCLIP with seeded random weights, as a user's checkpoint file."""
    from audioclip.models import create_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save(create_model("audioclip-tiny").state_dict(), path)
    return path


@pytest.fixture(autouse=True)
def no_leftover_child_processes():
    """A test must not leave a multiprocessing child running: at interpreter exit Python joins every non-daemon
    child, so one stuck child turns a finished test run into a CI job that never ends (it happened once)."""
    import multiprocessing
    import time

    def running() -> list:  # daemonic children (DataLoader workers) are terminated at exit, not joined
        return [p for p in multiprocessing.active_children() if not p.daemon]

    before = {p.pid for p in running()}
    yield
    deadline = time.monotonic() + 20
    while True:
        left = [p for p in running() if p.pid not in before]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for p in left:
        p.kill()
        p.join(5)
    if left:
        pytest.fail(f"the test left {len(left)} child process(es) running: {[(p.name, p.pid) for p in left]}")
