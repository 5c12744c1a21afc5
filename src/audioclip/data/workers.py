"""How loader and decoding worker processes start.

Python's default on Linux forks the parent as it is, threads' locks included. A single-process run forks before it
has threads to speak of; a DDP rank forks after gloo/NCCL and W&B have started theirs, and a child that inherits a
lock another thread held at the fork waits on it forever (a 2-rank CI run hung once that way). Under torch.distributed
with more than one rank, workers therefore start from a fork server, a clean single-threaded process started before
the first worker, and receive their dataset by pickling (every dataset here is picklable: caches reopen their file in
each worker). One process keeps ``fork``, which starts workers faster and needs nothing pickled.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.context import BaseContext

import torch.distributed as dist


def worker_context(workers: int) -> BaseContext | None:
    """The multiprocessing context for ``workers`` worker processes: ``forkserver`` in a process group of more than
    one rank, else ``None`` (a DataLoader's default)."""
    if workers > 0 and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return multiprocessing.get_context("forkserver")
    return None
