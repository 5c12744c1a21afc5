"""AudioSet pipeline throughput: extraction clips/s per core, shard bytes per clip, streaming items/s per worker.

Writes realistic 10 s clips (H.264 480x360 at 25 fps, stereo AAC 44.1 kHz with noise so that the compressed sizes
are not flattered by silence), runs extract on one core and pack, then reads items the way one DataLoader worker
does (one torch thread): FLAC decode + one JPEG + CLIP preprocessing, with and without the training augmentations,
and as ``pretrain-audio`` reads them (``frames=False``), also from ``npy`` / ``npy-mono`` shards and with
``device_augment`` (augmentation moved to the device). Prints one JSON line.
Usage: ``python benchmarks/bench_audioset.py [--clips 6] [--items 200]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from audioclip.data.audioset.batch_augment import augment_batch
from audioclip.data.audioset.datamodule import AudioSetStreamingDataset, class_names
from audioclip.data.audioset.extract import extract
from audioclip.data.audioset.ingest import ingest
from audioclip.data.audioset.metadata import read_segments
from audioclip.data.audioset.pack import pack
from audioclip.data.audioset.testmedia import EVAL_ROWS, SEGMENTS_HEADER, write_test_video


def items_per_second(dataset: AudioSetStreamingDataset, items: int) -> float:
    dataset[0]  # opens the chunk: a one-off cost, not a per-item one
    started = time.perf_counter()
    for i in range(items):
        dataset[i % len(dataset)]
    return items / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=6, help="number of 10 s clips to write and extract")
    parser.add_argument("--items", type=int, default=200, help="items to stream per measurement")
    args = parser.parse_args()
    torch.set_num_threads(1)  # what a DataLoader worker gets
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        rows = EVAL_ROWS[: args.clips]
        for i, row in enumerate(rows):
            ytid, start = row.split(", ")[:2]
            write_test_video(
                base / "videos" / f"{ytid}_{start}.mp4",
                seconds=10.0,
                fps=25,
                size=(480, 360),
                sample_rate=44_100,
                codec="libx264",
                noise=0.05,
                seed=i,
            )
        (base / "segments.csv").write_text(SEGMENTS_HEADER + "\n".join(rows) + "\n")
        segments = read_segments(base / "segments.csv")
        ingest(segments, base / "work", base / "videos")
        started = time.perf_counter()
        counts = extract(segments, base / "work", workers=1)
        extract_rate = counts["ok"] / (time.perf_counter() - started)
        summary = pack(segments, base / "work", workers=1)
        shards = str(base / "work" / "shards")
        common = {"channels": 1, "clip_seconds": 10.0, "names": class_names(shards)}
        eval_rate = items_per_second(AudioSetStreamingDataset(shards, train=False, **common), args.items)
        train_rate = items_per_second(AudioSetStreamingDataset(shards, train=True, **common), args.items)
        flac_audio_only = items_per_second(
            AudioSetStreamingDataset(shards, train=True, frames=False, **common), args.items
        )
        npy = pack(segments, base / "work", base / "work" / "shards-npy", workers=1, audio_format="npy")
        npy_shards = str(base / "work" / "shards-npy")
        npy_eval = items_per_second(AudioSetStreamingDataset(npy_shards, train=False, **common), args.items)
        npy_train = items_per_second(AudioSetStreamingDataset(npy_shards, train=True, **common), args.items)
        mono = pack(segments, base / "work", base / "work" / "shards-mono", workers=1, audio_format="npy-mono")
        mono_shards = str(base / "work" / "shards-mono")
        mono_audio_only = items_per_second(
            AudioSetStreamingDataset(mono_shards, train=True, frames=False, **common), args.items
        )
        # device_augment=True: the worker decodes and sends int16; the augmentation runs batched after transfer
        device_train = items_per_second(
            AudioSetStreamingDataset(npy_shards, train=True, device_augment=True, **common), args.items
        )
        device_audio_only = items_per_second(
            AudioSetStreamingDataset(mono_shards, train=True, frames=False, device_augment=True, **common), args.items
        )
        batch = torch.zeros(64, 1, 441_000, dtype=torch.int16).random_(-3000, 3000)
        started = time.perf_counter()
        augment_batch(batch, torch.full((64,), 441_000), 441_000)
        batched_cpu = 64 / (time.perf_counter() - started)
    print(
        json.dumps(
            {
                "clips": counts["ok"],
                "extract_clips_per_s_per_core": round(extract_rate, 2),
                "shard_bytes_per_clip": round(summary["bytes_per_clip"]),
                "stream_items_per_s_per_worker_eval": round(eval_rate, 1),
                "stream_items_per_s_per_worker_train": round(train_rate, 1),
                "npy_shard_bytes_per_clip": round(npy["bytes_per_clip"]),
                "npy_stream_items_per_s_per_worker_eval": round(npy_eval, 1),
                "npy_stream_items_per_s_per_worker_train": round(npy_train, 1),
                # pretrain-audio (frames=False): audio decode + training augmentations only
                "stream_items_per_s_per_worker_train_audio_only": round(flac_audio_only, 1),
                "npy_mono_shard_bytes_per_clip": round(mono["bytes_per_clip"]),
                "npy_mono_stream_items_per_s_per_worker_train_audio_only": round(mono_audio_only, 1),
                # device-side augmentation mode: what a loader worker does, and the batched augmentation on 1 CPU
                # thread (an upper bound of its cost; on a GPU it is a gather and a multiply-add per batch)
                "npy_stream_items_per_s_per_worker_train_device_augment": round(device_train, 1),
                "npy_mono_stream_items_per_s_per_worker_train_audio_only_device_augment": round(device_audio_only, 1),
                "batched_augment_items_per_s_cpu_1_thread": round(batched_cpu, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
