"""Benchmark of the ESC-50 data pipeline on a synthetic ESC-50-sized dataset; prints one JSON line.

Measures: the cold cache build, the time from DataModule creation to
the first training batch on a warm cache, train-loader throughput with the paper's augmentations
and 2 workers, and the peak memory of the whole process tree (main process, cache-build pool,
DataLoader workers). The reference AudioCLIP loader needed 21 s and 2.8 GB for one ESC-50
training split on the same kind of 2-core machine; the targets here are <= 2 s to the first batch
and < 1 GB peak RSS.

Memory is sampled every 50 ms over the whole process tree. ``peak_rss_mb`` sums the resident set
sizes of the processes: an upper bound, as it counts pages shared between processes (the
libtorch and lightning pages that forked workers share with the main process: ``import_rss_mb``
alone) once per process. ``peak_pss_mb`` sums the proportional set sizes, which split every shared
page between the processes that map it: the memory the tree really holds. ``train_*`` are the
same peaks from DataModule creation on a warm cache to the end of one training epoch.

    python benchmarks/bench_data.py                 # 2,000 clips x 5 s in a temporary directory
    python benchmarks/bench_data.py --clips 200     # a quick smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from audioclip.data import ESC50DataModule
from audioclip.data.cache import CACHE_DIRNAME
from audioclip.data.esc50 import read_esc50_metadata
from audioclip.data.synthetic import write_esc50


def _process_tree(root_pid: int) -> list[int]:
    """``root_pid`` and all its descendants, from the parent pids in /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as file:
                    # the command name may hold spaces; the parent pid follows its closing parenthesis
                    parent = int(file.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def _kib(path: str, field: str) -> int:
    try:
        with open(path) as file:
            for line in file:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeMemory:
    """Samples the summed RSS and PSS of this process tree in a background thread; keeps the peaks."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.peak_rss_kib = 0
        self.peak_pss_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        pids = _process_tree(os.getpid())
        rss = sum(_kib(f"/proc/{pid}/status", "VmRSS:") for pid in pids)
        pss = sum(_kib(f"/proc/{pid}/smaps_rollup", "Pss:") for pid in pids)
        self.peak_rss_kib = max(self.peak_rss_kib, rss)
        self.peak_pss_kib = max(self.peak_pss_kib, pss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def run(root: Path, clips: int, batch_size: int, num_workers: int) -> dict:
    import_rss_kib = _kib("/proc/self/status", "VmRSS:")  # torch + lightning, before any data
    classes = 50 if clips >= 250 else max(1, clips // 5)
    clips_per_class = max(1, clips // classes)
    start = time.perf_counter()
    if not (root / "meta" / "esc50.csv").is_file():
        write_esc50(root, clips_per_class=clips_per_class, classes=classes)
    write_s = time.perf_counter() - start
    shutil.rmtree(root / CACHE_DIRNAME, ignore_errors=True)
    settings = {"root": root, "fold": 1, "batch_size": batch_size, "num_workers": num_workers, "augment": True}

    with TreeMemory() as build_memory:
        start = time.perf_counter()
        ESC50DataModule(**settings).prepare_data()
        cache_build_s = time.perf_counter() - start

    with TreeMemory() as train_memory:
        start = time.perf_counter()
        dm = ESC50DataModule(**settings, progress=False)
        dm.prepare_data()
        dm.setup("fit")
        batches = iter(dm.train_dataloader())
        next(batches)
        first_batch_s = time.perf_counter() - start
        start = time.perf_counter()
        items = sum(len(batch["id"]) for batch in batches)
        train_items_per_s = items / (time.perf_counter() - start)

    records = read_esc50_metadata(root)
    cache_bytes = sum(path.stat().st_size for path in (root / CACHE_DIRNAME).glob("esc50.*"))
    return {
        "benchmark": "esc50-data",
        "clips": len(records),
        "classes": len(dm.class_names),
        "clip_seconds": 5,
        "sample_rate": 44100,
        "fold": 1,
        "train_items": len(dm.train_set),
        "batch_size": batch_size,
        "num_workers": num_workers,
        "augment": True,
        "cpu_cores": len(os.sched_getaffinity(0)),
        "dataset_write_s": round(write_s, 2),
        "cache_build_s": round(cache_build_s, 2),
        "first_batch_s": round(first_batch_s, 3),
        "train_items_per_s": round(train_items_per_s, 1),
        "import_rss_mb": round(import_rss_kib / 1024),
        "peak_rss_mb": round(max(build_memory.peak_rss_kib, train_memory.peak_rss_kib) / 1024),
        "peak_pss_mb": round(max(build_memory.peak_pss_kib, train_memory.peak_pss_kib) / 1024),
        "train_peak_rss_mb": round(train_memory.peak_rss_kib / 1024),
        "train_peak_pss_mb": round(train_memory.peak_pss_kib / 1024),
        "cache_mb": round(cache_bytes / 2**20),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, help="dataset root to (re)use; default: a temporary directory")
    parser.add_argument("--clips", type=int, default=2000, help="clips to synthesise (default: 2000, ESC-50's size)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=2)
    args = parser.parse_args()
    if args.root is not None:
        result = run(args.root, args.clips, args.batch_size, args.num_workers)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
            result = run(Path(tmp), args.clips, args.batch_size, args.num_workers)
    print(json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
    main()
