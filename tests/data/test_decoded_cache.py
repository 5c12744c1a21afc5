"""The decoded cache: built once, reused warm, and invalidated per file by size or mtime."""

import os
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audioclip.data import ESC50DataModule
from audioclip.data.cache import CacheReader, CacheSpec, build_cache
from audioclip.data.esc50 import decode_esc50
from audioclip.data.synthetic import write_esc50

SPEC = CacheSpec(name="clips", decoder=decode_esc50, channels=1, length=5 * 44100, version="1")


def refuse_to_decode(path: Path) -> np.ndarray:
    """A decoder that marks every file it is asked to decode: shows which rows a build touched."""
    raise RuntimeError("decoded again")


def write_clip(path: Path, value: int, samples: int = 1000) -> np.ndarray:
    audio = (np.arange(samples) % 100 + value).astype(np.int16)
    sf.write(path, audio, 44100, subtype="PCM_16")
    return audio


@pytest.fixture
def clips(tmp_path):
    paths = [tmp_path / f"{i}.wav" for i in range(4)]
    data = [write_clip(path, 10 * i) for i, path in enumerate(paths)]
    return paths, data


def build(paths, spec=SPEC, cache_dir=None):
    cache_dir = cache_dir or paths[0].parent / "cache"
    return build_cache(cache_dir, spec, [p.name for p in paths], paths, progress=False)


def read_rows(cache):
    reader = CacheReader(cache)
    return [reader.read(row, int(cache.lengths[row]))[0] for row in range(len(cache.names))]


def decoded_again(cache):
    return [error is not None and "decoded again" in error for error in cache.errors]


def test_cold_build_stores_every_clip(clips):
    paths, data = clips
    cache = build(paths)
    assert cache.array_path == paths[0].parent / "cache" / "clips.npy"
    assert (paths[0].parent / "cache" / "clips.json").is_file()
    assert cache.errors == [None] * 4 and list(cache.lengths) == [1000] * 4
    assert all(np.array_equal(row, expected) for row, expected in zip(read_rows(cache), data, strict=True))


@pytest.mark.parametrize("in_process", [64, 0], ids=["in-process", "process-pool"])
def test_cold_build_stores_every_clip_in_process_or_in_a_pool(clips, in_process, monkeypatch):
    """A few clips are decoded in this process, many in a process pool: the cache is the same either way."""
    import audioclip.data.cache as cache_module

    monkeypatch.setattr(cache_module, "IN_PROCESS_CLIPS", in_process)
    monkeypatch.setattr(cache_module, "_available_cores", lambda: 2)
    paths, data = clips
    cache = build(paths)
    assert cache.errors == [None] * 4 and list(cache.lengths) == [1000] * 4
    assert all(np.array_equal(row, expected) for row, expected in zip(read_rows(cache), data, strict=True))


def test_warm_cache_decodes_nothing(clips):
    paths, data = clips
    build(paths)
    array_mtime = (paths[0].parent / "cache" / "clips.npy").stat().st_mtime_ns
    warm = build(paths, replace(SPEC, decoder=refuse_to_decode))
    assert decoded_again(warm) == [False] * 4
    assert (paths[0].parent / "cache" / "clips.npy").stat().st_mtime_ns == array_mtime
    assert all(np.array_equal(row, expected) for row, expected in zip(read_rows(warm), data, strict=True))


def test_a_changed_file_is_decoded_again_and_only_it(clips):
    paths, data = clips
    build(paths)
    write_clip(paths[2], 99)  # same size, new samples, new mtime
    assert decoded_again(build(paths, replace(SPEC, decoder=refuse_to_decode))) == [False, False, True, False]


def test_a_changed_file_shows_its_new_samples(clips):
    paths, data = clips
    build(paths)
    new = write_clip(paths[1], 55, samples=1500)  # new size
    cache = build(paths)
    rows = read_rows(cache)
    assert cache.lengths[1] == 1500 and np.array_equal(rows[1], new)
    assert np.array_equal(rows[0], data[0]) and np.array_equal(rows[3], data[3])


def test_an_mtime_change_alone_invalidates(clips):
    paths, _ = clips
    build(paths)
    stat = paths[0].stat()
    os.utime(paths[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert decoded_again(build(paths, replace(SPEC, decoder=refuse_to_decode))) == [True, False, False, False]


def test_a_new_file_list_or_decoder_version_rebuilds_everything(clips, tmp_path):
    paths, _ = clips
    build(paths)
    assert all(decoded_again(build(paths, replace(SPEC, decoder=refuse_to_decode, version="2"))))
    paths.append(tmp_path / "4.wav")
    write_clip(paths[-1], 40)
    assert all(decoded_again(build(paths, replace(SPEC, decoder=refuse_to_decode, version="2"))))


def test_reader_pickles_without_its_file_descriptor(clips):
    paths, data = clips
    reader = CacheReader(build(paths))
    reader.read(0, 10)
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._fd is None and np.array_equal(clone.read(3, 1000), data[3][None])


def test_datamodule_cache_lives_next_to_the_data_and_follows_changes(tmp_path):
    root = write_esc50(tmp_path / "esc50", clips_per_class=2, classes=2, progress=False)
    dm = ESC50DataModule(root, fold=1, batch_size=1, num_workers=0, val_fraction=0.5, progress=False)
    dm.setup("test")
    assert (root / ".audioclip-cache" / "esc50.npy").is_file() and (root / ".audioclip-cache" / "esc50.json").is_file()
    name = dm.test_set.ids[0]
    new = write_clip(root / "audio" / name, -500, samples=220500)
    dm = ESC50DataModule(root, fold=1, batch_size=1, num_workers=0, val_fraction=0.5, progress=False)
    dm.setup("test")
    index = dm.test_set.ids.index(name)
    assert np.array_equal(dm.test_set[index]["audio"][0].numpy(), new.astype(np.float32))
