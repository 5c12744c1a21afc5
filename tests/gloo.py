"""Process groups for the tests that spawn ranks themselves (gloo on CPU): one rendezvous, used by all of them.

A rank that is done must not tear the group down while its peer is still connecting: on a loaded 2-core machine
rank 0 once left `init_process_group`, did its work and destroyed the group before rank 1 had finished gloo's
full-mesh connect, and rank 1 failed with "Gloo connectFullMesh failed ... Connection closed by peer". So every
rank passes a barrier after joining and another before leaving. The rendezvous goes through a FileStore in the
test's own temporary folder (no port to race for), with a timeout, and when it fails it is retried once with a
fresh store: only the rendezvous, before any rank has done work; the assertions run once, in the parent.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

RENDEZVOUS_TIMEOUT = timedelta(seconds=120)
RETRY_MARK = "gloo rendezvous failed"  # in the error a rank raises when joining fails, read by `spawn`


@contextlib.contextmanager
def gloo_group(rank: int, world_size: int, store: Path, threads: int = 1) -> Iterator[None]:
    """Join the group of `world_size` ranks through the FileStore `store`; barrier on entry and on exit."""
    torch.set_num_threads(threads)  # the ranks share a 2-core machine
    try:
        dist.init_process_group(
            "gloo", init_method=f"file://{store}", rank=rank, world_size=world_size, timeout=RENDEZVOUS_TIMEOUT
        )
        dist.barrier()
    except RuntimeError as error:
        raise RuntimeError(f"{RETRY_MARK} on rank {rank}: {error}") from None
    try:
        yield
        dist.barrier()  # nobody closes its connections while a peer still uses them
    finally:
        dist.destroy_process_group()


def spawn(fn: Callable, tmp_path: Path, *args, nprocs: int = 2) -> None:
    """`mp.spawn(fn, (store, *args))` with a fresh store under `tmp_path`; once more if a rank could not join."""
    for attempt in range(2):
        store = tmp_path / f"gloo-store-{attempt}"
        try:
            mp.spawn(fn, args=(store, *args), nprocs=nprocs, join=True)
            return
        except mp.ProcessRaisedException as error:
            if attempt or RETRY_MARK not in str(error):
                raise
