"""Loader and decoding worker processes: how they start, which signals they take, how they end.

`timeout`, SLURM, Kubernetes and systemd signal the whole process group; a loader worker that died of the signal
would take the run down before the main process could save (`audioclip.tasks.callbacks.SaveOnSignal`), so workers
ignore the termination signals (`IgnoreTerminationSignals`) and the main process decides and shuts them down.

Python's default on Linux forks the parent as it is, threads' locks included. A single-process run forks before it
has threads to speak of; a DDP rank forks after gloo/NCCL and W&B have started theirs, and a child that inherits a
lock another thread held at the fork waits on it forever (a 2-rank CI run hung once that way). Under torch.distributed
with more than one rank, workers therefore start from a fork server, a clean single-threaded process started before
the first worker, and receive their dataset by pickling (every dataset here is picklable: caches reopen their file in
each worker). One process keeps ``fork``, which starts workers faster and needs nothing pickled.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import signal
from collections.abc import Callable
from multiprocessing.context import BaseContext

from lightning.fabric.utilities.seed import pl_worker_init_function

from audioclip.process_group import rank_and_world


def worker_context(workers: int) -> BaseContext | None:
    """The multiprocessing context for ``workers`` worker processes: ``forkserver`` in a process group of more than
    one rank, else ``None`` (a DataLoader's default)."""
    if workers > 0 and rank_and_world()[1] > 1:
        return multiprocessing.get_context("forkserver")
    return None


def _kill_daemonic_children() -> None:
    """At exit Python ends its daemonic children with SIGTERM, then joins them. A loader worker ignores SIGTERM (see
    below), so a worker whose loader was never shut down (persistent workers of a loader still referenced at exit)
    would keep that join, and the process, waiting forever; SIGKILL ends it, and a worker holds nothing to save."""
    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()


# what a scheduler or a terminal sends to a whole process group to stop a job; workers leave them to the main process
WORKER_IGNORED_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class IgnoreTerminationSignals:
    """A DataLoader `worker_init_fn`: the worker ignores SIGTERM, SIGUSR1 and SIGINT, then runs `then`.

    A signal to the process group (`timeout`, `scancel`, a Kubernetes pod deletion, Ctrl+C) reaches every worker
    too; a worker killed by it makes the main process fail with `DataLoader worker ... is killed by signal`
    before `SaveOnSignal` can write `last.ckpt`. The main process ends its workers itself (a `None` on their index
    queue); a worker whose parent is gone exits on its own within torch's 5 s watchdog interval; SIGKILL still
    kills a worker, and the process's exit kills those still running. `then` defaults to Lightning's worker seeding
    when `seed_everything(workers=True)` asked for it (Lightning adds that only to loaders without a
    `worker_init_fn`).

    Args:
        rank: the global rank, for Lightning's worker seeding.
        then: another `worker_init_fn` to run after.
    """

    _exit_hook_registered = False

    def __init__(self, rank: int = 0, then: Callable[[int], None] | None = None) -> None:
        self.rank, self.then = rank, then
        if not IgnoreTerminationSignals._exit_hook_registered:
            # registered after multiprocessing's own exit hook, so it runs before it (atexit is last in, first out)
            atexit.register(_kill_daemonic_children)
            IgnoreTerminationSignals._exit_hook_registered = True

    def __call__(self, worker_id: int) -> None:
        for signum in WORKER_IGNORED_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        if self.then is not None:
            self.then(worker_id)
        elif int(os.environ.get("PL_SEED_WORKERS", 0)):
            pl_worker_init_function(worker_id, rank=self.rank)
