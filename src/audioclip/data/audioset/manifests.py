"""The manifests of AudioSet preparation, and the loop that fills them: one JSON line per YTID and stage.

Every stage (``sources`` for download or ingest, ``extract``) records ``ok`` or ``failed`` with a reason per YTID in
``ROOT/manifests/{stage}.{i}-of-{n}.jsonl``, one file per ``--shard i/n``, so machines sharing a file system never
write the same file. Work already recorded is skipped, which makes every stage resumable; ``run_parallel`` maps a
stage's work over a process pool and appends each record as it lands, so a crash loses at most the clips in flight.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

from tqdm import tqdm

from audioclip.data.audioset.metadata import Segment
from audioclip.data.audioset.youtube import FINAL


def manifest_dir(root: Path) -> Path:
    return root / "manifests"


def read_manifest(root: str | Path, stage: str) -> dict[str, dict]:
    """The latest record per YTID over every shard's manifest file of a stage."""
    records: dict[str, dict] = {}
    for path in sorted(manifest_dir(Path(root)).glob(f"{stage}.*.jsonl")):
        with path.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    # a machine killed mid-write leaves a partial last line; that clip is simply redone
                    print(f"warning: {path}:{line_no} is not JSON, ignored", file=sys.stderr)
                    continue
                records[record["ytid"]] = record
    return records


def pending(segments: Sequence[Segment], done: dict[str, dict], retry_failed: bool) -> list[Segment]:
    """Segments without a record, and with ``retry_failed`` those that failed for a reason that may pass (a download
    recorded ``"failure": "final"``, i.e. a deleted or private video, is not retried)."""

    def retry(record: dict) -> bool:
        return retry_failed and record["status"] != "ok" and record.get("failure") != FINAL

    return [s for s in segments if s.ytid not in done or retry(done[s.ytid])]


_DONE = object()  # marks the end of the items


def run_parallel(
    stage: str,
    root: Path,
    shard: tuple[int, int],
    work: Callable[[object], dict],
    items: Sequence[object],
    workers: int,
    after: Callable[[dict], None] | None = None,
) -> Counter:
    """Map ``work`` over ``items`` in a process pool, appending each result to this shard's manifest as it lands.

    At most ``workers`` items are in flight, so ``after(record)`` (called on each result, e.g. to back off when
    YouTube throttles) holds back the next ones; an exception from it stops the stage, unstarted items stay pending.
    """
    manifest = manifest_dir(root) / f"{stage}.{shard[0]}-of-{shard[1]}.jsonl"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    counts: Counter = Counter()
    # spawn, not fork: the caller may hold threads (torch, tqdm) that fork would copy mid-lock
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) if workers > 1 else None
    todo = iter(items)
    running: set[Future] = set()
    with manifest.open("a", encoding="utf-8") as f, tqdm(total=len(items), desc=stage, unit="clip") as bar:
        try:
            while True:
                if pool is None:
                    item = next(todo, _DONE)
                    if item is _DONE:
                        break
                    results = [work(item)]
                else:
                    while len(running) < workers and (item := next(todo, _DONE)) is not _DONE:
                        running.add(pool.submit(work, item))
                    if not running:
                        break
                    finished, running = wait(running, return_when=FIRST_COMPLETED)
                    results = [future.result() for future in finished]
                for record in results:
                    f.write(json.dumps(record) + "\n")
                    f.flush()  # a crash loses at most the clips in flight
                    counts[record["status"]] += 1
                    bar.update()
                    bar.set_postfix(ok=counts["ok"], failed=counts["failed"])
                    if after is not None:
                        after(record)
        finally:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
    return counts
