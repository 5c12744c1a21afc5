"""Run many AudioSet shard tasks on an existing engine: here in turn (``local``), or scheduled by Ray (``ray``).

With Ray (an optional extra, ``pip install -e .[ray]``) every shard is one task that asks for ``--workers`` CPUs;
Ray's scheduler hands the next shard to whichever node frees its CPUs first, so slow nodes take fewer shards (the
dynamic balancing video2dataset gets from its Spark/Ray distributors). ``--ray-address auto`` joins a running
cluster; without it a local Ray starts. A shard whose node dies is retried on another node (``NODE_LOSS_RETRIES``);
shards that already left a stats file are skipped, so a re-run after a crash does the rest. SLURM users run
``docs/audioset-slurm.sbatch`` instead.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from audioclip.data.audioset.metadata import read_segments
from audioclip.data.audioset.parts import join, read_json
from audioclip.data.audioset.shard import run_shard

DISTRIBUTORS = ("local", "ray")
# Ray runs a shard again elsewhere when the node or worker process running it dies (preemption, a lost machine, the
# OOM killer): a shard task only replaces its own part, so a second run is safe. An exception the task raises is not
# retried (it would fail again); the shard is reported as failed and a re-run of the command picks it up.
NODE_LOSS_RETRIES = 3


def shard_task(segments_csv: str, work: str, out: str, shard: tuple[int, int], options: dict) -> dict:
    """One shard task as a Ray or local job: reads the segment list itself, so only a path travels."""
    return run_shard(read_segments(segments_csv), work, out, shard, **options)


def run_shards(
    segments_csv: str | Path,
    work: str | Path,
    out: str | Path,
    num_shards: int,
    *,
    distributor: str = "local",
    ray_address: str | None = None,
    cpus_per_shard: int = 1,
    options: dict | None = None,
    redo: bool = False,
    progress: Callable[[dict], None] | None = None,
) -> dict:
    """Run shard tasks ``0..num_shards-1`` (those without ``out/stats/i-of-n.json`` unless ``redo``).

    Returns ``{"done": [...], "failed": {shard: error}, "skipped": [...]}``; a failed shard does not stop the others.
    """
    if distributor not in DISTRIBUTORS:
        raise ValueError(f"--distributor must be one of {', '.join(DISTRIBUTORS)}, got {distributor!r}")
    if num_shards < 1:
        raise ValueError(f"--num-shards must be at least 1, got {num_shards}")
    options = dict(options or {})
    names = {i: f"{i}-of-{num_shards}" for i in range(num_shards)}
    skipped = [n for n in names.values() if not redo and read_json(join(out, "stats", f"{n}.json")) is not None]
    todo = [i for i, n in names.items() if n not in skipped]
    result: dict = {"done": [], "failed": {}, "skipped": skipped}
    report = progress or (lambda stats: print(stats, file=sys.stderr, flush=True))
    started = time.perf_counter()

    def finished(name: str, stats: dict | None, error: str | None) -> None:
        if error is None:
            result["done"].append(name)
        else:
            result["failed"][name] = error
        done = len(result["done"]) + len(result["failed"])
        line = {"shard": name, "ok": error is None, "error": error, "finished": done, "of": len(todo)}
        report({**line, "elapsed_s": round(time.perf_counter() - started, 1), **({"stats": stats} if stats else {})})

    args = (str(segments_csv), str(work), str(out))
    if distributor == "local":
        for i in todo:
            try:
                finished(names[i], shard_task(*args, (i, num_shards), options), None)
            except Exception as e:  # noqa: BLE001 - one bad shard is reported, the others go on
                finished(names[i], None, f"{type(e).__name__}: {e}")
        return result
    try:
        import ray
    except ImportError:
        raise RuntimeError("--distributor ray needs Ray: pip install -e '.[ray]' (or pip install ray)") from None
    ray.init(address=ray_address, ignore_reinit_error=True, log_to_driver=False)
    remote = ray.remote(num_cpus=cpus_per_shard, max_retries=NODE_LOSS_RETRIES)(shard_task)
    pending = {remote.remote(*args, (i, num_shards), options): names[i] for i in todo}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        name = pending.pop(ready[0])
        try:
            finished(name, ray.get(ready[0]), None)
        except Exception as e:  # noqa: BLE001 - Ray wraps the task's error; report it and go on
            finished(name, None, str(e).strip().splitlines()[-1][:300])
    return result
