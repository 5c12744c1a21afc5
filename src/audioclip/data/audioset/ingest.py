"""AudioSet's ingest stage: clips the user already has, matched by file name to the segments of the list.

A file ``{YTID}_{start}.ext``, ``{YTID}_{start}_{end}.ext`` or ``{YTID}.ext`` at any depth under ``--clips`` is the
segment's source (the naming of yt-dlp downloads and of the common AudioSet mirrors); its manifest is the same
``sources`` manifest the download stage writes, so extract cannot tell the two apart.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from audioclip.data.audioset.download import IGNORED_SUFFIXES
from audioclip.data.audioset.manifests import pending, read_manifest, run_parallel
from audioclip.data.audioset.metadata import Segment, select_shard
from audioclip.data.provenance import data_kind, mark_synthetic

# Which file to take when a clips directory holds several for one YTID: video containers first.
MEDIA_PREFERENCE = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".flv", ".3gp", ".ts", ".m4a", ".wav", ".flac", ".ogg")
# {YTID}.ext, {YTID}_{start}.ext or {YTID}_{start}_{end}.ext; YTIDs are 11 characters of [A-Za-z0-9_-].
CLIP_NAME = re.compile(r"^(?P<ytid>[A-Za-z0-9_-]{11})(?:_(?P<start>\d+(?:\.\d+)?)(?:_(?P<end>\d+(?:\.\d+)?))?)?$")


def _media_rank(path: Path) -> int:
    suffix = path.suffix.lower()
    return MEDIA_PREFERENCE.index(suffix) if suffix in MEDIA_PREFERENCE else len(MEDIA_PREFERENCE)


def ingest(
    segments: Sequence[Segment],
    root: str | Path,
    clips: str | Path,
    *,
    full_videos: bool = False,
    shard: tuple[int, int] = (0, 1),
    retry_failed: bool = False,
) -> Counter:
    """Match the files under ``clips`` (``{YTID}_{start}.*`` or ``{YTID}.*``, any depth) to this shard's segments.

    A file is the segment itself unless ``full_videos``, in which case the segment starts at ``start_seconds`` in it.
    A name with a start that differs from the segment's by more than half a second is a different segment.
    """
    root, clips = Path(root), Path(clips)
    if not clips.is_dir():
        raise FileNotFoundError(f"--clips {clips}: not a directory")
    if data_kind(clips) == "synthetic":  # the shards made from generated clips are synthetic too
        mark_synthetic(root, f"audioclip prepare audioset ingest, from the synthetic clips in {clips}")
    candidates: dict[str, list[tuple[float | None, Path]]] = {}
    for path in clips.rglob("*"):
        match = CLIP_NAME.match(path.stem)
        if match and path.is_file() and path.suffix.lower() not in IGNORED_SUFFIXES:
            start = float(match["start"]) if match["start"] is not None else None
            candidates.setdefault(match["ytid"], []).append((start, path))
    todo = pending(select_shard(segments, shard), read_manifest(root, "sources"), retry_failed)

    def match_one(segment: Segment) -> dict:
        record = {"ytid": segment.ytid, "via": "ingest"}
        found = [p for s, p in candidates.get(segment.ytid, []) if s is None or abs(s - segment.start) < 0.5]
        if not found:
            reason = f"no {segment.ytid}_{segment.start:.3f}.* or {segment.ytid}.* under {clips}"
            return {**record, "status": "failed", "reason": reason}
        path = min(found, key=lambda p: (_media_rank(p), str(p)))
        return {**record, "status": "ok", "path": str(path.resolve()), "offset": segment.start if full_videos else 0.0}

    # matching is a dictionary lookup per segment: a process pool would cost more than it saves
    return run_parallel("sources", root, shard, match_one, todo, workers=1)
