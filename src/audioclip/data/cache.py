"""A decoded-audio cache next to the data: one int16 ``.npy`` array per dataset plus a JSON index.

The reference AudioCLIP loaders (AndreyGuzhov/AudioCLIP, ``utils/datasets/esc50.py``, ``us8k.py``)
decode and resample every clip with librosa into float32 RAM at every start (21 s and 2.8 GB for
one ESC-50 training split on a 2-core machine). Here each clip is decoded once, by a process pool
over all cores, into row ``i`` of an array of shape (clips, channels, samples); row ``i`` holds
``lengths[i]`` valid samples per channel. The index records every source file's size and mtime;
a file whose size or mtime changed is decoded again into its row, a changed file list or decoder
version rebuilds the whole array. Files that cannot be decoded are recorded with their problem
so that every later start reports them without decoding anything.

Readers fetch one row at a time with positioned reads (``os.pread``): the page cache shares the
data between DataLoader workers, and each worker holds only the clips of its current batch
(a memory map would keep every page it ever touched in the worker's resident set).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from audioclip.data.workers import worker_context

CACHE_DIRNAME = ".audioclip-cache"
_INDEX_FORMAT = 1

Decoder = Callable[[Path], np.ndarray]
FileKey = tuple[int, int] | None


@dataclass(frozen=True)
class CacheSpec:
    """What a dataset's cache holds; any change of these fields rebuilds it."""

    name: str  # file stem of the array and index, e.g. "esc50"
    decoder: Decoder  # path -> int16 (channels, <= length) array; a module-level function (pickled by name)
    channels: int
    length: int  # samples per channel of a row: the longest clip kept
    version: str  # bump when the decoder's output changes


@dataclass
class ClipCache:
    """A built cache: where the array lies and what each row holds."""

    array_path: Path
    data_offset: int  # bytes before row 0 in the .npy file
    channels: int
    length: int
    names: list[str]
    lengths: np.ndarray  # valid samples per row
    errors: list[str | None]  # the problem of each file that could not be decoded, else None
    keys: list[FileKey]  # (size, mtime_ns) of each source file at decode time; None when missing


def file_key(path: Path) -> FileKey:
    """Size and mtime (ns) of a file, or None when it does not exist."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_size, stat.st_mtime_ns


def _available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _npy_data_offset(array_path: Path, shape: tuple[int, ...]) -> int | None:
    """Byte offset of the data of a C-ordered int16 ``.npy`` of this shape, None if it is not one."""
    try:
        with open(array_path, "rb") as file:
            version = np.lib.format.read_magic(file)
            if version == (1, 0):
                header = np.lib.format.read_array_header_1_0(file)
            elif version == (2, 0):
                header = np.lib.format.read_array_header_2_0(file)
            else:
                return None
            offset = file.tell()
    except (OSError, ValueError):
        return None
    if header != (shape, False, np.dtype(np.int16)):
        return None
    if array_path.stat().st_size != offset + int(np.prod(shape)) * 2:
        return None
    return offset


def _index_path(cache_dir: Path, spec: CacheSpec) -> Path:
    return cache_dir / f"{spec.name}.json"


def _spec_fields(spec: CacheSpec) -> dict:
    return {"name": spec.name, "channels": spec.channels, "length": spec.length, "version": spec.version}


def _load(cache_dir: Path, spec: CacheSpec, names: Sequence[str]) -> ClipCache | None:
    """The cache on disk if it was built for ``spec`` and exactly this list of files, else None."""
    try:
        index = json.loads(_index_path(cache_dir, spec).read_text())
    except (OSError, ValueError):
        return None
    if index.get("format") != _INDEX_FORMAT or index.get("spec") != _spec_fields(spec):
        return None
    entries = index.get("entries", [])
    if [entry[0] for entry in entries] != list(names):
        return None
    array_path = cache_dir / f"{spec.name}.npy"
    offset = _npy_data_offset(array_path, (len(names), spec.channels, spec.length))
    if offset is None:
        return None
    return ClipCache(
        array_path=array_path,
        data_offset=offset,
        channels=spec.channels,
        length=spec.length,
        names=list(names),
        lengths=np.array([entry[2] for entry in entries], dtype=np.int64),
        errors=[entry[3] for entry in entries],
        keys=[tuple(entry[1]) if entry[1] is not None else None for entry in entries],
    )


def _save(cache_dir: Path, spec: CacheSpec, cache: ClipCache) -> None:
    entries = [
        [name, list(key) if key is not None else None, int(length), error]
        for name, key, length, error in zip(cache.names, cache.keys, cache.lengths, cache.errors, strict=True)
    ]
    index = {"format": _INDEX_FORMAT, "spec": _spec_fields(spec), "entries": entries}
    path = _index_path(cache_dir, spec)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(index))
    os.replace(tmp, path)


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Serialise builders (e.g. DDP ranks calling ``setup`` at once) on one cache directory."""
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _sample_offset(cache: ClipCache | CacheReader, row: int, channel: int) -> int:
    """Byte offset of the first sample of ``channel`` in ``row``."""
    return cache.data_offset + (row * cache.channels + channel) * cache.length * 2


# Per pool worker: the decoder and the cache opened once for writing.
_worker: dict = {}


def _init_worker(decoder: Decoder, cache: ClipCache) -> None:
    # One process per core already uses every core; intra-op threads would only contend.
    torch.set_num_threads(1)
    # Positioned writes instead of a writable memory map keep the written rows in the page cache
    # rather than in this worker's resident set.
    _worker.update(decoder=decoder, cache=cache, fd=os.open(cache.array_path, os.O_WRONLY))


def _decode_row(task: tuple[int, Path]) -> tuple[int, int, str | None]:
    row, path = task
    cache: ClipCache = _worker["cache"]
    try:
        audio = _worker["decoder"](path)
    except Exception as error:  # any failure is this file's problem: recorded and reported, never dropped
        # Decoders name a known problem in ``error.problem`` (common.BadFileError; common imports this
        # module, so the class is not imported here).
        return row, 0, getattr(error, "problem", None) or f"could not be decoded ({type(error).__name__}: {error})"
    if audio.dtype != np.int16 or audio.ndim != 2 or audio.shape[0] != cache.channels or audio.shape[1] > cache.length:
        return (
            row,
            0,
            f"decoder returned {audio.dtype} {audio.shape}, not int16 ({cache.channels}, <= {cache.length})",
        )
    for channel, samples in enumerate(audio):
        os.pwrite(_worker["fd"], np.ascontiguousarray(samples).tobytes(), _sample_offset(cache, row, channel))
    return row, audio.shape[1], None


def build_cache(
    cache_dir: Path,
    spec: CacheSpec,
    names: Sequence[str],
    paths: Sequence[Path],
    progress: bool = True,
) -> ClipCache:
    """Return the cache of ``paths`` (rows in this order), decoding only what is new or changed."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(cache_dir / f"{spec.name}.lock"):
        keys = [file_key(path) for path in paths]
        cache = _load(cache_dir, spec, names)
        if cache is None:
            shape = (len(names), spec.channels, spec.length)
            # A fresh .npy is sparse on disk until rows are written.
            np.lib.format.open_memmap(cache_dir / f"{spec.name}.npy", mode="w+", dtype=np.int16, shape=shape)
            cache = _load_fresh(cache_dir, spec, names)
            todo = list(range(len(names)))
        else:
            todo = [row for row, key in enumerate(keys) if key != cache.keys[row]]
            if not todo:
                return cache
            # Rows are about to change under the old index: drop it first so that an interrupted
            # build leaves no index vouching for half-written rows.
            _index_path(cache_dir, spec).unlink()
        _decode_rows(cache, spec, [(row, paths[row]) for row in todo], progress)
        for row in todo:
            cache.keys[row] = keys[row]
        _save(cache_dir, spec, cache)
        return cache


def _load_fresh(cache_dir: Path, spec: CacheSpec, names: Sequence[str]) -> ClipCache:
    array_path = cache_dir / f"{spec.name}.npy"
    return ClipCache(
        array_path=array_path,
        data_offset=_npy_data_offset(array_path, (len(names), spec.channels, spec.length)),
        channels=spec.channels,
        length=spec.length,
        names=list(names),
        lengths=np.zeros(len(names), dtype=np.int64),
        errors=[None] * len(names),
        keys=[None] * len(names),
    )


# Up to this many clips are decoded in this process: faster than starting a pool, and no fork of a process that
# may already run threads (W&B, a loader's persistent workers), where a forked child can hang on a lock.
IN_PROCESS_CLIPS = 64


def _decode_rows(cache: ClipCache, spec: CacheSpec, tasks: list[tuple[int, Path]], progress: bool) -> None:
    processes = max(1, min(_available_cores(), len(tasks)))
    with tqdm(
        total=len(tasks), desc=f"Decoding {spec.name} into the cache", unit="clip", disable=not progress
    ) as bar:
        if len(tasks) <= IN_PROCESS_CLIPS or processes == 1:
            _worker.update(decoder=spec.decoder, cache=cache, fd=os.open(cache.array_path, os.O_WRONLY))
            try:
                results = map(_decode_row, tasks)
                for row, length, error in results:
                    cache.lengths[row], cache.errors[row] = length, error
                    bar.update()
            finally:
                os.close(_worker.pop("fd"))
                _worker.clear()
            return
        context = worker_context(processes) or multiprocessing.get_context()
        pool = context.Pool(processes, _init_worker, (spec.decoder, cache))
        try:
            for row, length, error in pool.imap_unordered(_decode_row, tasks, chunksize=4):
                cache.lengths[row], cache.errors[row] = length, error
                bar.update()
        except BaseException:
            pool.terminate()
            raise
        # the workers leave on the pool's own sentinel: `terminate` (Pool's `with`) relies on SIGTERM, and a worker
        # forked from a process with a Python SIGTERM handler survives it, waiting forever on the task queue's lock
        pool.close()
        pool.join()


class CacheReader:
    """Reads rows of a ``ClipCache``; picklable, opens its file lazily in each process."""

    def __init__(self, cache: ClipCache) -> None:
        self.array_path = cache.array_path
        self.data_offset = cache.data_offset
        self.channels = cache.channels
        self.length = cache.length
        self._fd: int | None = None

    def __getstate__(self) -> dict:
        # A file descriptor must not travel into DataLoader workers; each opens its own.
        return {**self.__dict__, "_fd": None}

    def __del__(self) -> None:
        if self._fd is not None:
            os.close(self._fd)

    def read(self, row: int, length: int) -> np.ndarray:
        """The first ``length`` samples of every channel of ``row`` as int16 (channels, length)."""
        if self._fd is None:
            self._fd = os.open(self.array_path, os.O_RDONLY)
        nbytes = length * 2
        channels = []
        for channel in range(self.channels):
            data = os.pread(self._fd, nbytes, _sample_offset(self, row, channel))
            if len(data) != nbytes:
                raise OSError(f"{self.array_path}: cache file is shorter than its index says; delete it to rebuild")
            channels.append(np.frombuffer(data, dtype=np.int16))
        return np.stack(channels)
