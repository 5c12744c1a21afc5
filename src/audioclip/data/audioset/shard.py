"""One standalone AudioSet shard task: download or ingest -> extract -> pack the segments of shard ``i`` of ``n``.

At two million clips the preparation runs as many such tasks (SLURM array tasks, Ray tasks, or in turn here; the
distributors are in ``distribute.py`` and ``docs/audioset-slurm.sbatch``). A task needs no shared file system: its
clips, extracted media and manifests stay under its node-local work folder, and its LitData part, stats and manifests
go to the output (a path or an ``s3://`` / ``gs://`` URL), where ``parts.merge`` makes one training set of them.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from audioclip.data.audioset.download import download
from audioclip.data.audioset.extract import extract
from audioclip.data.audioset.ingest import ingest
from audioclip.data.audioset.manifests import manifest_dir, read_manifest
from audioclip.data.audioset.metadata import DEFAULT_LABELS, Segment, select_shard
from audioclip.data.audioset.pack import pack
from audioclip.data.audioset.parts import join, upload_file, write_json


def part_name(shard: tuple[int, int]) -> str:
    return f"{shard[0]}-of-{shard[1]}"


def run_shard(
    segments: Sequence[Segment],
    work: str | Path,
    out: str | Path,
    shard: tuple[int, int],
    *,
    clips: str | Path | None = None,
    full_videos: bool = False,
    download_options: dict | None = None,
    workers: int = 4,
    retry_failed: bool = False,
    labels_csv: str | Path = DEFAULT_LABELS,
    val_fraction: float = 0.0,
    chunk_bytes: str = "64MB",
    audio_format: str = "flac",
    balance_tiers: bool = False,
    keep_work: bool = False,
) -> dict:
    """One standalone shard task: ingest (``clips``) or download -> extract -> pack this shard's segments.

    Intermediates live in ``work/{i}-of-{n}`` (the node's local disk); the LitData part goes to
    ``out[/split]/parts/{i}-of-{n}`` (a path or URL), the stats to ``out/stats/{i}-of-{n}.json`` and the manifests to
    ``out/manifests/``. Running it again (a late node, a retry) replaces only this part; ``parts.merge`` then
    makes the training set. Media are deleted once packed unless ``keep_work``.
    """
    part = part_name(shard)
    root = Path(work) / part
    mine = select_shard(segments, shard)
    stats: dict = {"shard": part, "segments": len(mine), "seconds": {}}
    started = time.perf_counter()
    if clips is not None:
        stats["ingest"] = dict(
            ingest(mine, root, clips, full_videos=full_videos, shard=shard, retry_failed=retry_failed)
        )
    else:
        options = {"sections": not full_videos, **(download_options or {})}
        stats["download"] = dict(
            download(mine, root, workers=workers, shard=shard, retry_failed=retry_failed, **options)
        )
    stats["seconds"]["fetch"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    stats["extract"] = dict(extract(mine, root, workers=workers, shard=shard, retry_failed=retry_failed))
    stats["seconds"]["extract"] = round(time.perf_counter() - started, 2)
    reasons = Counter(
        r.get("reason", "")[:120]
        for stage in ("sources", "extract")
        for r in read_manifest(root, stage).values()
        if r["status"] != "ok"
    )
    stats["top_failures"] = reasons.most_common(5)
    started = time.perf_counter()
    summary = pack(
        mine,
        root,
        out,
        labels_csv=labels_csv,
        val_fraction=val_fraction,
        workers=workers,
        chunk_bytes=chunk_bytes,
        audio_format=audio_format,
        part=part,
        balance_tiers=balance_tiers,
        frequency_segments=segments,  # every shard sees the class frequencies of the whole list
    )
    stats["seconds"]["pack"] = round(time.perf_counter() - started, 2)
    stats["packed"] = {name: split["clips"] for name, split in summary["splits"].items()}
    stats["bytes"] = summary["bytes"]
    for manifest in sorted(manifest_dir(root).glob("*.jsonl")):
        upload_file(manifest, join(out, "manifests", manifest.name))
    write_json(join(out, "stats", f"{part}.json"), stats)
    if not keep_work:
        for folder in ("clips", "extracted", ".staging"):
            shutil.rmtree(root / folder, ignore_errors=True)
    return stats
