"""AudioSet's pack stage: the extracted clips written into LitData shards, optionally split into train/val and into
repeat tiers for class-balanced sampling.

Each sample holds the clip's audio (FLAC, or raw int16 ``.npy``), its ten frames (JPEG), its label indices and its
YTID. Shards are written on the local disk and then published to their destination (a path or an fsspec URL,
``parts.publish``) with ``index.json`` last. Repeat tiers follow repeat-factor sampling (Gupta et al., LVIS, CVPR
2019, sec. 3).

References: LitData ``BinaryWriter`` (the writer under ``optimize``).
"""

from __future__ import annotations

import io
import json
import shutil
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

from audioclip.constants import AUDIOSET_CLASSES
from audioclip.data.audioset.extract import clip_dir
from audioclip.data.audioset.manifests import read_manifest
from audioclip.data.audioset.metadata import DEFAULT_LABELS, NUM_FRAMES, Segment, label_indices, read_class_labels
from audioclip.data.audioset.parts import INDEX, PARTS, is_url, join, publish, publish_empty, read_json, write_tiers

AUDIO_FORMATS = ("flac", "npy", "npy-mono")
REPEAT_THRESHOLD = 0.01  # classes on fewer than 1 % of the clips are repeated (LVIS's t, here over AudioSet's 527)
MAX_REPEAT_TIER = 64


def _audio_bytes(path: Path, audio_format: str) -> bytes:
    """The clip's audio as stored in the shard: the FLAC file itself, or (``npy``) its int16 samples (samples,
    channels) as a ``.npy`` file, ~20x faster to decode for ~1.2-2x the bytes; both lossless. ``npy-mono`` stores
    stereo as its channel mean (within 0.5 of what ``channels=1`` computes per item), half the bytes of ``npy``."""
    if audio_format == "flac":
        return path.read_bytes()
    pcm, _ = sf.read(path, dtype="int16", always_2d=True)
    if audio_format == "npy-mono" and pcm.shape[1] > 1:
        # what channels=1 training makes of stereo (the mean), rounded to int16 once here instead of per item
        pcm = np.round(pcm.mean(axis=1, keepdims=True)).astype(np.int16)
    buffer = io.BytesIO()
    np.save(buffer, pcm)
    return buffer.getvalue()


def _load_sample(job: tuple[str, str, list[int], str]) -> dict:
    """One shard sample; LitData's writer serialises lists as JSON, so the ten frames are ten ``bytes`` keys."""
    ytid, directory, labels, audio_format = job
    directory = Path(directory)
    sample: dict = {"ytid": ytid, "audio": _audio_bytes(directory / "audio.flac", audio_format)}
    for k in range(NUM_FRAMES):
        sample[f"frame_{k}"] = (directory / f"{k}.jpg").read_bytes()
    sample["labels"] = np.asarray(labels, dtype=np.int16)
    return sample


def val_fraction_of(ytid: str) -> float:
    """A stable number in [0, 1) per YTID, independent of ``--shard``'s, for carving a validation split."""
    return zlib.crc32(f"val:{ytid}".encode()) / 2**32


def pack(
    segments: Sequence[Segment],
    root: str | Path,
    out: str | Path | None = None,
    *,
    labels_csv: str | Path = DEFAULT_LABELS,
    val_fraction: float = 0.0,
    workers: int = 4,
    chunk_bytes: str = "64MB",
    audio_format: str = "flac",
    part: str | None = None,
    balance_tiers: bool = False,
    frequency_segments: Sequence[Segment] | None = None,
    repeat_threshold: float = REPEAT_THRESHOLD,
) -> dict:
    """Write the extracted clips of ``segments`` into LitData shards under ``out`` (default ``root/shards``).

    ``out`` is a local path or a URL (``s3://``, ``gs://``, any fsspec location): the shards are written on the local
    disk under ``root`` first, then moved or uploaded. With ``part`` (``i-of-n``, from a shard task) they become
    ``out[/split]/parts/{part}``, to be combined by ``parts.merge``.

    ``audio_format`` ``flac`` keeps the shards small; ``npy`` (raw int16) makes streaming ~2x faster per loader
    worker, where decoding FLAC is most of an item's cost.

    With ``val_fraction`` > 0 a stable share of the clips goes to ``out/val`` and the rest to ``out/train``, so
    checkpoints can be selected on clips the model never trained on. With ``balance_tiers`` the training clips are
    packed by repeat tier (``repeat_factors``, with class frequencies over ``frequency_segments``, default
    ``segments``) into ``tier-{r}/`` datasets that ``AudioSetDataModule(balanced=True)`` samples in proportion to
    ``r``. Returns a summary (clips, bytes per clip).
    """
    root = Path(root).resolve()
    out = out if out is not None and is_url(out) else Path(out).resolve() if out is not None else root / "shards"
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if audio_format not in AUDIO_FORMATS:
        raise ValueError(f"--audio-format must be one of {', '.join(AUDIO_FORMATS)}, got {audio_format!r}")
    classes = read_class_labels(labels_csv)
    if len(classes) != AUDIOSET_CLASSES:
        raise ValueError(f"{labels_csv}: {len(classes)} classes, expected {AUDIOSET_CLASSES}")
    extracted = read_manifest(root, "extract")
    jobs = [
        (s.ytid, str(clip_dir(root, s.ytid)), label_indices(s, classes), audio_format)
        for s in segments
        if extracted.get(s.ytid, {}).get("status") == "ok"
    ]
    if not jobs and part is None:  # a shard task without a usable clip leaves empty parts, so merge counts it
        raise RuntimeError(f"nothing to pack: no clip of the segment list is extracted under {root}")
    splits = {"": jobs}
    if val_fraction > 0:
        splits = {
            "train": [j for j in jobs if val_fraction_of(j[0]) >= val_fraction],
            "val": [j for j in jobs if val_fraction_of(j[0]) < val_fraction],
        }
    summary: dict = {"clips": 0, "bytes": 0, "splits": {}}
    repeats = repeat_factors(frequency_segments or segments, classes, repeat_threshold) if balance_tiers else {}
    for name, split_jobs in splits.items():
        groups: dict[int, list] = {0: split_jobs}
        if balance_tiers and name != "val":  # validation measures the data as it is
            # every tier of the whole list, so that a shard without clips of a tier still leaves its (empty) part
            groups = {repeat_tier(r): [] for r in repeats.values()} if part is not None else {}
            for job in split_jobs:
                groups.setdefault(repeat_tier(repeats[job[0]]), []).append(job)
        for tier, tier_jobs in sorted(groups.items()):
            key = "/".join(x for x in (name, f"tier-{tier}" if tier else "") if x) or "all"
            split_dir = join(out, *key.split("/")) if key != "all" else out
            if part is not None:
                split_dir = join(split_dir, PARTS, part)
            elif not tier_jobs:
                raise RuntimeError(f"{split_dir}: no clip falls in this split; lower --val-fraction or add clips")
            if not tier_jobs:  # a small shard may have no validation clip: its part says so, for merge
                publish_empty(split_dir)
                continue
            staging = root / ".staging" / (f"{key.replace('/', '-')}-{part}" if part else key.replace("/", "-"))
            summary["splits"][key] = _pack_split(tier_jobs, split_dir, staging, classes, workers, chunk_bytes)
            summary["clips"] += summary["splits"][key]["clips"]
            summary["bytes"] += summary["splits"][key]["bytes"]
        if balance_tiers and name != "val" and part is None:
            write_tiers(join(out, name) if name else out)
    summary["bytes_per_clip"] = summary["bytes"] / max(summary["clips"], 1)
    return summary


def repeat_factors(segments: Sequence[Segment], classes: Sequence, threshold: float = REPEAT_THRESHOLD) -> dict:
    """Repeat factor per YTID: ``max(1, sqrt(t / f(c)))`` of its rarest class ``c`` (``f`` the share of clips with
    ``c``): repeat-factor sampling (Gupta et al., LVIS, CVPR 2019, sec. 3), the per-clip analogue of the balanced
    samplers of PANNs (Kong et al. 2020) and AST, which draw rare classes as often as common ones."""
    label_lists = {s.ytid: label_indices(s, classes) for s in segments}
    counts = np.zeros(len(classes))
    for labels in label_lists.values():
        counts[labels] += 1
    share = counts / max(len(label_lists), 1)
    factor = np.sqrt(threshold / np.maximum(share, 1e-12)).clip(min=1.0)
    return {ytid: float(factor[labels].max()) if labels else 1.0 for ytid, labels in label_lists.items()}


def repeat_tier(factor: float) -> int:
    """The power of two nearest a repeat factor (1, 2, 4, ... 64): few tiers, each one LitData dataset."""
    return int(min(2 ** round(np.log2(max(factor, 1.0))), MAX_REPEAT_TIER))


def _pack_split(jobs: list, out: str | Path, staging: Path, classes: Sequence, workers: int, chunk_bytes: str) -> dict:
    """Pack ``jobs`` into ``staging`` on the local disk, then publish it as ``out`` (a path or URL)."""
    from litdata.streaming.writer import BinaryWriter

    jobs = sorted(jobs)
    previous = read_json(join(out, "pack.json"))
    if previous is not None and previous.get("ytids_crc32") == _ytids_crc(jobs) and read_json(join(out, INDEX)):
        return previous  # resumable: an identical earlier pack is kept as it is
    shutil.rmtree(staging, ignore_errors=True)
    # In this process, with threads reading the files: a sample is a few file reads (plus a FLAC decode for npy,
    # which releases the GIL), so worker processes would cost more to start than they save on a shard's clips.
    writer = BinaryWriter(str(staging), chunk_bytes=chunk_bytes)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for i, sample in enumerate(pool.map(_load_sample, jobs)):
            writer[i] = sample
    writer.done()
    writer.merge(num_workers=1)
    index = json.loads((staging / INDEX).read_text())
    written = sum(chunk["chunk_size"] for chunk in index["chunks"])
    # count what was actually written: the index is what training will read
    if written != len(jobs):
        raise RuntimeError(f"{out}: LitData wrote {written} of {len(jobs)} samples; see the errors above")
    counts = np.zeros(AUDIOSET_CLASSES, dtype=np.int64)
    for _, _, labels, _ in jobs:
        counts[labels] += 1
    (staging / "label_counts.json").write_text(json.dumps({"clips": len(jobs), "counts": counts.tolist()}))
    (staging / "class_names.json").write_text(json.dumps([c.display_name for c in classes]))
    size = sum(p.stat().st_size for p in staging.glob("*.bin"))
    summary = {"clips": len(jobs), "bytes": size, "bytes_per_clip": size / len(jobs), "ytids_crc32": _ytids_crc(jobs)}
    (staging / "pack.json").write_text(json.dumps(summary))
    publish(staging, out)
    return summary


def _ytids_crc(jobs: Sequence[tuple]) -> int:
    """Identifies a pack by its clips and (when not the default FLAC) its audio format."""
    formats = {j[3] for j in jobs} - {"flac"}
    return zlib.crc32(",".join([j[0] for j in jobs] + sorted(formats)).encode())
