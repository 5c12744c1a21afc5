"""AudioSet preparation: segment list -> clips (download or ingest) -> decoded media (extract) -> shards (pack).

The paper (Guzhov et al. 2021, sec. 4.1) uses, for each AudioSet segment, its audio track, ten equally spaced video
frames and the class names. Every stage is resumable (a JSONL manifest per stage records ``ok`` or ``failed`` with a
reason per YTID, and work already recorded is skipped), parallel (``--workers``, a process pool) and splittable
across machines (``--shard i/n`` keeps the YTIDs whose crc32 is ``i`` modulo ``n``; each machine writes its own
manifest file, ``{stage}.{i}-of-{n}.jsonl``).

Layout under ``--root``::

    manifests/sources.*.jsonl   download / ingest results: ytid -> media file and the offset of the segment in it
    manifests/extract.*.jsonl   extract results: channels, seconds, frame times or the reason of the failure
    clips/                      downloaded clips, ``{YTID}_{start}.{ext}``
    extracted/{YTID[:2]}/{YTID}/audio.flac, 0.jpg .. 9.jpg
    shards/                     LitData chunks + index.json (``pack``), label_counts.json, class_names.json

Frame positions: the k-th frame (k = 0..9) is the frame on screen at ``(k + 0.5) * D / 10`` seconds into the segment,
the centres of ten equal intervals of its duration ``D`` (the segment length, cut to the decoded audio length).

References: yt-dlp ``--download-sections``; PyAV (FFmpeg bindings); LitData ``optimize``.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from functools import partial
from pathlib import Path

import av
import numpy as np
import soundfile as sf
from tqdm import tqdm

from audioclip.constants import AUDIOSET_CLASSES, SAMPLE_RATE
from audioclip.data.audioset.distribute import DISTRIBUTORS, main_shards
from audioclip.data.audioset.metadata import (
    DEFAULT_LABELS,
    NUM_FRAMES,
    Segment,
    label_indices,
    parse_shard,
    read_class_labels,
    read_segments,
    select_shard,
)
from audioclip.data.audioset.parts import (
    INDEX,
    PARTS,
    is_url,
    join,
    merge,
    publish,
    publish_empty,
    read_json,
    upload_file,
    write_json,
    write_tiers,
)
from audioclip.data.audioset.youtube import FINAL, TEMPORARY, Throttle, ThrottledError, classify, ytdlp_options
from audioclip.data.provenance import data_kind, mark_synthetic

FRAME_SHORT_SIDE = 256  # CLIP's preprocessing resizes to 224 next, so 256 leaves room for its centre crop
JPEG_QUALITY = 90
# FLAC's fastest level: measured ~7 % larger but 25 % faster to decode than the default, and decoding the audio is
# the largest cost of a streamed training item (benchmarks/bench_audioset.py)
FLAC_LEVEL = 0.0
MIN_AUDIO_SECONDS = 0.5  # shorter decoded audio is a broken clip, not a short one
# Decoded audio this much shorter than the container says is a truncated file (e.g. an interrupted download);
# half a second tolerates the usual mismatch of audio and video lengths in real uploads.
TRUNCATION_TOLERANCE = 0.5
DEFAULT_URL_TEMPLATE = "https://www.youtube.com/watch?v={ytid}"
# A small progressive stream is enough: frames are shrunk to a 256 short side and the audio is re-encoded anyway.
DEFAULT_FORMAT = "b[height<=?480]/bv*[height<=?480]+ba/b"
# Which file to take when a clips directory holds several for one YTID: video containers first.
MEDIA_PREFERENCE = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".flv", ".3gp", ".ts", ".m4a", ".wav", ".flac", ".ogg")
IGNORED_SUFFIXES = {".part", ".json", ".txt", ".ytdl", ".tmp", ".jpg", ".png", ".webp", ".vtt", ".srt"}
# {YTID}.ext, {YTID}_{start}.ext or {YTID}_{start}_{end}.ext; YTIDs are 11 characters of [A-Za-z0-9_-].
CLIP_NAME = re.compile(r"^(?P<ytid>[A-Za-z0-9_-]{11})(?:_(?P<start>\d+(?:\.\d+)?)(?:_(?P<end>\d+(?:\.\d+)?))?)?$")


# --------------------------------------------------------------------------------------------------------- manifests
def _manifest_dir(root: Path) -> Path:
    return root / "manifests"


def read_manifest(root: str | Path, stage: str) -> dict[str, dict]:
    """The latest record per YTID over every shard's manifest file of a stage."""
    records: dict[str, dict] = {}
    for path in sorted(_manifest_dir(Path(root)).glob(f"{stage}.*.jsonl")):
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


def _pending(segments: Sequence[Segment], done: dict[str, dict], retry_failed: bool) -> list[Segment]:
    """Segments without a record, and with ``retry_failed`` those that failed for a reason that may pass (a download
    recorded ``"failure": "final"``, i.e. a deleted or private video, is not retried)."""

    def retry(record: dict) -> bool:
        return retry_failed and record["status"] != "ok" and record.get("failure") != FINAL

    return [s for s in segments if s.ytid not in done or retry(done[s.ytid])]


def _run_parallel(
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
    manifest = _manifest_dir(root) / f"{stage}.{shard[0]}-of-{shard[1]}.jsonl"
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


_DONE = object()


# ---------------------------------------------------------------------------------------------------------- download
def find_ffmpeg() -> str | None:
    """ffmpeg from PATH, else the binary bundled by the ``imageio-ffmpeg`` package; None when neither exists."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    return imageio_ffmpeg.get_ffmpeg_exe()


def _error_reason(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors[-1] if errors else lines[-1] if lines else "no output")[:300]


def download_one(
    segment: Segment,
    clips_dir: Path,
    url_template: str,
    sections: bool,
    ffmpeg: str | None,
    fmt: str,
    timeout: float,
    options: Sequence[str] = (),
) -> dict:
    """Fetch one segment with yt-dlp; with ``sections`` only its time range, else the whole video.

    A failure's record says whether it is ``final`` (the video is gone) or ``temporary``, and whether YouTube
    throttled the request (``youtube.classify``)."""
    stem = f"{segment.ytid}_{segment.start:.3f}"
    for stale in clips_dir.glob(f"{stem}.*"):  # a previous attempt's fragments would confuse the file lookup
        stale.unlink()
    cmd = [sys.executable, "-m", "yt_dlp", "--quiet", "--no-warnings", "--no-progress", "--no-playlist"]
    cmd += ["--enable-file-urls", "--format", fmt, "--output", str(clips_dir / f"{stem}.%(ext)s")]
    if ffmpeg:
        cmd += ["--ffmpeg-location", ffmpeg]
    if sections:
        cmd += ["--download-sections", f"*{segment.start:.3f}-{segment.end:.3f}"]
    cmd += [*options, url_template.format(ytid=segment.ytid)]
    record = {"ytid": segment.ytid, "via": "download"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        reason = f"yt-dlp timed out after {timeout:.0f} s"
        return {**record, "status": "failed", "reason": reason, "failure": TEMPORARY, "throttled": False}
    files = [p for p in clips_dir.glob(f"{stem}.*") if p.suffix not in IGNORED_SUFFIXES]
    if proc.returncode != 0 or not files:
        failure, throttled = classify(proc.stderr + proc.stdout)
        reason = _error_reason(proc.stderr + proc.stdout)
        return {**record, "status": "failed", "reason": reason, "failure": failure, "throttled": throttled}
    offset = 0.0 if sections else segment.start
    return {**record, "status": "ok", "path": str(files[0].resolve()), "offset": offset}


def download(
    segments: Sequence[Segment],
    root: str | Path,
    *,
    url_template: str = DEFAULT_URL_TEMPLATE,
    sections: bool = True,
    fmt: str = DEFAULT_FORMAT,
    workers: int = 4,
    shard: tuple[int, int] = (0, 1),
    retry_failed: bool = False,
    timeout: float = 300.0,
    options: Sequence[str] = (),
    max_throttled: int = 10,
    backoff: float = 60.0,
) -> Counter:
    """Download every pending segment of this shard into ``root/clips``; gone videos are recorded as failures.

    ``options`` go to yt-dlp as they are (``youtube.ytdlp_options``: cookies, sleeps, proxy, rate limit). After a
    throttled download the next one waits ``backoff`` seconds, doubling while throttling goes on; ``max_throttled``
    in a row stop the stage with ``ThrottledError`` (the clips not yet tried stay pending).
    """
    root = Path(root)
    clips_dir = root / "clips"
    clips_dir.mkdir(parents=True, exist_ok=True)
    ffmpeg = find_ffmpeg()
    if sections and ffmpeg is None:
        raise RuntimeError("downloading segment ranges needs ffmpeg: install it or `pip install imageio-ffmpeg`")
    todo = _pending(select_shard(segments, shard), read_manifest(root, "sources"), retry_failed)
    work = partial(
        download_one,
        clips_dir=clips_dir,
        url_template=url_template,
        sections=sections,
        ffmpeg=ffmpeg,
        fmt=fmt,
        timeout=timeout,
        options=list(options),
    )
    throttle = Throttle(max_in_a_row=max_throttled, backoff=backoff)
    return _run_parallel("sources", root, shard, work, todo, workers, after=throttle.after)


# ------------------------------------------------------------------------------------------------------------ ingest
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
    todo = _pending(select_shard(segments, shard), read_manifest(root, "sources"), retry_failed)

    def match_one(segment: Segment) -> dict:
        record = {"ytid": segment.ytid, "via": "ingest"}
        found = [p for s, p in candidates.get(segment.ytid, []) if s is None or abs(s - segment.start) < 0.5]
        if not found:
            reason = f"no {segment.ytid}_{segment.start:.3f}.* or {segment.ytid}.* under {clips}"
            return {**record, "status": "failed", "reason": reason}
        path = min(found, key=lambda p: (_media_rank(p), str(p)))
        return {**record, "status": "ok", "path": str(path.resolve()), "offset": segment.start if full_videos else 0.0}

    # matching is a dictionary lookup per segment: a process pool would cost more than it saves
    return _run_parallel("sources", root, shard, match_one, todo, workers=1)


# ----------------------------------------------------------------------------------------------------------- extract
def clip_dir(root: str | Path, ytid: str) -> Path:
    """Where extract writes a clip's media; two-character buckets keep directories small at 2M clips."""
    return Path(root) / "extracted" / ytid[:2] / ytid


def frame_times(duration: float, num_frames: int = NUM_FRAMES) -> list[float]:
    """Seconds into the segment of the equally spaced frames: the centres of ``num_frames`` equal intervals."""
    return [(k + 0.5) * duration / num_frames for k in range(num_frames)]


def _decode_audio(path: Path, offset: float, max_seconds: float) -> np.ndarray:
    """Audio from ``offset`` for at most ``max_seconds``, resampled to 44.1 kHz int16, shape (T, C) with C <= 2."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise ValueError("no audio track")
        declared = container.duration / av.time_base - offset if container.duration else None
        stream = container.streams.audio[0]
        layout = "mono" if stream.codec_context.channels == 1 else "stereo"  # more than 2 channels: downmix
        resampler = av.AudioResampler(format="s16", layout=layout, rate=SAMPLE_RATE)
        origin = (container.start_time or 0) / av.time_base
        if offset > 0:
            container.seek(int((origin + offset) * av.time_base))
        pieces, first_time = [], None
        for frame in container.decode(stream):
            if first_time is None and frame.time is not None:
                first_time = frame.time - origin
            for out in resampler.resample(frame):
                pieces.append(out.to_ndarray().reshape(-1, out.layout.nb_channels))
            if first_time is not None and sum(len(p) for p in pieces) / SAMPLE_RATE > offset - first_time + max_seconds:
                break
        pieces += [out.to_ndarray().reshape(-1, out.layout.nb_channels) for out in resampler.resample(None)]
    if not pieces:
        raise ValueError("audio track has no decodable samples")
    audio = np.concatenate(pieces)
    skip = max(0, round((offset - (first_time or 0.0)) * SAMPLE_RATE))
    audio = audio[skip : skip + round(max_seconds * SAMPLE_RATE)]
    if declared is not None and len(audio) / SAMPLE_RATE < min(declared, max_seconds) - TRUNCATION_TOLERANCE:
        raise ValueError(f"truncated: {len(audio) / SAMPLE_RATE:.2f} s of audio decode, the file says {declared:.2f} s")
    return audio


def _decode_frames(path: Path, offset: float, times: Sequence[float]) -> list[bytes]:
    """JPEGs (short side 256) of the frames on screen at ``offset + t`` for each ``t`` in ``times``."""
    targets = [offset + t for t in times]
    jpegs: list[bytes] = []
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError("no video track")
        stream = container.streams.video[0]
        origin = (container.start_time or 0) / av.time_base
        if offset > 0:
            container.seek(int((origin + offset) * av.time_base))
        shown = None  # the latest frame that starts at or before the next target time
        for frame in container.decode(stream):
            t = (frame.time if frame.time is not None else 0.0) - origin
            while len(jpegs) < len(targets) and t > targets[len(jpegs)] + 1e-6:
                jpegs.append(_jpeg(shown if shown is not None else frame))
            if len(jpegs) == len(targets):
                break
            shown = frame
    if shown is None:
        raise ValueError("video track has no decodable frames")
    while len(jpegs) < len(targets):  # the video ends before the audio: its last frame stays on screen
        jpegs.append(_jpeg(shown))
    return jpegs


def _jpeg(frame: av.VideoFrame) -> bytes:
    scale = FRAME_SHORT_SIDE / min(frame.width, frame.height)
    width, height = round(frame.width * scale), round(frame.height * scale)
    image = frame.reformat(width=width, height=height, format="rgb24", interpolation="BICUBIC").to_image()
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def extract_one(job: tuple[Segment, str, float], root: Path) -> dict:
    """Decode one clip into ``extracted/``: ``audio.flac`` (44.1 kHz, int16, 1-2 channels) and ``0.jpg``..``9.jpg``."""
    segment, source, offset = job
    record = {"ytid": segment.ytid}
    path = Path(source)
    try:
        if not path.is_file():
            raise ValueError(f"source file {path} is gone")
        audio = _decode_audio(path, offset, segment.duration)
        if len(audio) < MIN_AUDIO_SECONDS * SAMPLE_RATE:
            raise ValueError(f"only {len(audio) / SAMPLE_RATE:.2f} s of audio (truncated?)")
        duration = len(audio) / SAMPLE_RATE
        times = frame_times(duration)
        jpegs = _decode_frames(path, offset, times)
    except (av.FFmpegError, OSError, ValueError) as e:
        return {**record, "status": "failed", "reason": f"{path.name}: {type(e).__name__}: {e}"[:300]}
    final = clip_dir(root, segment.ytid)
    # write next to the final place, then rename: a clip directory exists only when it is complete
    partial_dir = final.with_name(f".{segment.ytid}.{os.getpid()}.tmp")
    shutil.rmtree(partial_dir, ignore_errors=True)
    partial_dir.mkdir(parents=True)
    sf.write(
        partial_dir / "audio.flac", audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16", compression_level=FLAC_LEVEL
    )
    for k, jpeg in enumerate(jpegs):
        (partial_dir / f"{k}.jpg").write_bytes(jpeg)
    shutil.rmtree(final, ignore_errors=True)
    partial_dir.rename(final)
    return {
        **record,
        "status": "ok",
        "channels": int(audio.shape[1]),
        "seconds": round(duration, 4),
        "frame_times": [round(t, 4) for t in times],
    }


def extract(
    segments: Sequence[Segment],
    root: str | Path,
    *,
    workers: int = 4,
    shard: tuple[int, int] = (0, 1),
    retry_failed: bool = False,
) -> Counter:
    """Decode every clip that download/ingest found and extract has not done yet."""
    root = Path(root)
    sources = read_manifest(root, "sources")
    done = read_manifest(root, "extract")
    jobs = []
    for segment in _pending(select_shard(segments, shard), done, retry_failed):
        source = sources.get(segment.ytid)
        if source is not None and source["status"] == "ok":
            jobs.append((segment, source["path"], float(source["offset"])))
    return _run_parallel("extract", root, shard, partial(extract_one, root=root), jobs, workers)


# -------------------------------------------------------------------------------------------------------------- pack
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


# ------------------------------------------------------------------------------------------------------- shard task
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
    for manifest in sorted(_manifest_dir(root).glob("*.jsonl")):
        upload_file(manifest, join(out, "manifests", manifest.name))
    write_json(join(out, "stats", f"{part}.json"), stats)
    if not keep_work:
        for folder in ("clips", "extracted", ".staging"):
            shutil.rmtree(root / folder, ignore_errors=True)
    return stats


# --------------------------------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="audioclip prepare audioset",
        description="Prepare AudioSet: download or ingest clips, extract audio + 10 frames, pack LitData shards.",
    )
    stages = parser.add_subparsers(dest="stage", required=True)

    def stage(name: str, help: str) -> argparse.ArgumentParser:
        p = stages.add_parser(name, help=help)
        p.add_argument("--segments", required=True, help="an official segment list, e.g. eval_segments.csv")
        p.add_argument("--root", required=True, help="work directory: manifests, clips, extracted media, shards")
        return p

    def parallel(p: argparse.ArgumentParser) -> None:
        p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
        p.add_argument("--shard", default="0/1", help="i/n: this machine's share of the segments (default 0/1)")
        p.add_argument("--retry-failed", action="store_true", help="redo clips recorded as failed")

    def download_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url-template", default=DEFAULT_URL_TEMPLATE, help="URL of a YTID, with {ytid}")
        p.add_argument("--format", default=DEFAULT_FORMAT, help="yt-dlp format selector")
        p.add_argument("--timeout", type=float, default=300.0, help="seconds per clip before giving up")
        p.add_argument("--cookies", help="yt-dlp --cookies: a Netscape cookies file of a signed-in browser session")
        p.add_argument("--sleep-requests", type=float, help="yt-dlp --sleep-requests: seconds between requests")
        p.add_argument("--sleep-interval", type=float, help="yt-dlp --sleep-interval: seconds before each download")
        p.add_argument("--proxy", help="yt-dlp --proxy URL, e.g. socks5://127.0.0.1:1080")
        p.add_argument("--limit-rate", help="yt-dlp --limit-rate, e.g. 2M (bytes/s)")
        p.add_argument("--ytdlp-args", help="further yt-dlp options, one shell-quoted string")
        p.add_argument("--max-throttled", type=int, default=10, help="stop after this many throttled in a row")
        p.add_argument("--backoff", type=float, default=60.0, help="seconds to wait after a throttled download")

    def pack_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--labels", default=str(DEFAULT_LABELS), help="class_labels_indices.csv (default: bundled)")
        p.add_argument("--out", help="shard directory (default ROOT/shards)")
        p.add_argument("--val-fraction", type=float, default=0.0, help="share of clips for OUT/val (default 0)")
        p.add_argument("--chunk-bytes", default="64MB", help="LitData chunk size")
        p.add_argument(
            "--audio-format",
            choices=AUDIO_FORMATS,
            default="flac",
            help="audio in the shards: flac (small), npy (raw int16: faster streaming, more bytes), npy-mono",
        )
        p.add_argument(
            "--balance-tiers",
            action="store_true",
            help="pack training clips by repeat tier (tier-1, tier-2, ...) for class-balanced sampling",
        )

    p = stage("download", "fetch each segment's time range with yt-dlp")
    parallel(p)
    download_args(p)
    p.add_argument("--full-videos", action="store_true", help="fetch whole videos (no ffmpeg range cut)")
    p = stage("ingest", "use clips you already have: {YTID}_{start}.* or {YTID}.*")
    p.add_argument("--clips", required=True, help="directory of existing clips (searched recursively)")
    p.add_argument("--full-videos", action="store_true", help="files are whole videos, not segments")
    p.add_argument("--shard", default="0/1", help="i/n: this machine's share of the segments (default 0/1)")
    p.add_argument("--retry-failed", action="store_true", help="look again for clips recorded as missing")
    p = stage("extract", "decode audio (44.1 kHz FLAC) and 10 frames (JPEG) per clip")
    parallel(p)
    p = stage("pack", "write the extracted clips into LitData shards")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="LitData writer processes")
    pack_args(p)
    p = stage("all", "ingest (with --clips) or download, then extract, then pack")
    parallel(p)
    download_args(p)
    pack_args(p)
    p.add_argument("--clips", help="ingest this directory instead of downloading")
    p.add_argument("--full-videos", action="store_true", help="sources are whole videos, not segments")
    p = stage("shard", "one standalone shard task (--shard i/n): fetch -> extract -> pack into OUT/.../parts/i-of-n")
    parallel(p)
    download_args(p)
    pack_args(p)
    p.add_argument("--clips", help="ingest this directory instead of downloading")
    p.add_argument("--full-videos", action="store_true", help="sources are whole videos, not segments")
    p.add_argument("--keep-work", action="store_true", help="keep the clips and extracted media under ROOT")
    p = stage("shards", "run shard tasks 0..N-1 here in turn or on a Ray cluster (--distributor ray), then merge")
    p.add_argument("--num-shards", type=int, required=True, help="N: the number of shard tasks")
    p.add_argument("--distributor", choices=DISTRIBUTORS, default="local", help="local (in turn) or ray")
    p.add_argument("--ray-address", help="a running Ray cluster (e.g. auto); default: start a local Ray")
    p.add_argument("--redo", action="store_true", help="run shards again even when their stats file exists")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (and Ray CPUs) per shard")
    p.add_argument("--retry-failed", action="store_true", help="redo clips recorded as failed (temporary ones)")
    download_args(p)
    pack_args(p)
    p.add_argument("--clips", help="ingest this directory instead of downloading")
    p.add_argument("--full-videos", action="store_true", help="sources are whole videos, not segments")
    p.add_argument("--keep-work", action="store_true", help="keep the clips and extracted media under ROOT")
    p = stages.add_parser("merge", help="make OUT[/train,/val] one LitData dataset over the parts of the shard tasks")
    p.add_argument("--out", required=True, help="the --out of the shard tasks (path or s3:// / gs:// URL)")
    p.add_argument("--allow-missing", action="store_true", help="merge the parts there are, listing the missing")
    return parser


def _download_options(args: argparse.Namespace) -> dict:
    options = ytdlp_options(
        args.cookies, args.sleep_requests, args.sleep_interval, args.proxy, args.limit_rate, args.ytdlp_args
    )
    if args.cookies and not Path(args.cookies).is_file():
        raise FileNotFoundError(f"--cookies {args.cookies}: no such file")
    return {
        "url_template": args.url_template,
        "fmt": args.format,
        "timeout": args.timeout,
        "options": options,
        "max_throttled": args.max_throttled,
        "backoff": args.backoff,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``audioclip prepare audioset STAGE ...``; prints one JSON summary line per stage.

    ``argv`` is what follows ``prepare`` (``audioset STAGE ...``, from the ``audioclip`` command) or just
    ``STAGE ...`` (from ``python -m audioclip.data.audioset.prepare``). Exit status 3: YouTube throttled
    ``--max-throttled`` downloads in a row (the message says what to do).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["audioset"]:
        argv = argv[1:]
    parser = _parser()
    args = parser.parse_args(argv)
    if args.stage == "merge":
        print(json.dumps({"stage": "merge", **merge(args.out, allow_missing=args.allow_missing)}), flush=True)
        return 0
    if args.stage in ("shard", "shards") and not args.out:
        parser.error(f"{args.stage} needs --out: where the parts go (a path, or an s3:// / gs:// URL)")
    if args.stage == "shards":
        return main_shards(args, _download_options)
    try:
        return _run(args)
    except ThrottledError as e:
        print(e, file=sys.stderr)
        return 3


def _run(args: argparse.Namespace) -> int:
    """Run the stages of a parsed command line."""
    segments = read_segments(args.segments)
    shard = parse_shard(getattr(args, "shard", "0/1"))
    retry = getattr(args, "retry_failed", False)
    root = Path(args.root)

    def report(stage: str, result: dict) -> None:
        print(json.dumps({"stage": stage, **result}), flush=True)

    started = time.perf_counter()
    if args.stage == "shard":
        stats = run_shard(
            segments,
            root,
            args.out,
            shard,
            clips=args.clips,
            full_videos=args.full_videos,
            download_options=_download_options(args),
            workers=args.workers,
            retry_failed=retry,
            labels_csv=args.labels,
            val_fraction=args.val_fraction,
            chunk_bytes=args.chunk_bytes,
            audio_format=args.audio_format,
            balance_tiers=args.balance_tiers,
            keep_work=args.keep_work,
        )
        report("shard", stats)
        return 0
    if args.stage in ("ingest", "all") and getattr(args, "clips", None):
        counts = ingest(segments, root, args.clips, full_videos=args.full_videos, shard=shard, retry_failed=retry)
        report("ingest", dict(counts))
    elif args.stage in ("download", "all"):
        counts = download(
            segments,
            root,
            sections=not args.full_videos,
            workers=args.workers,
            shard=shard,
            retry_failed=retry,
            **_download_options(args),
        )
        report("download", dict(counts))
    if args.stage in ("extract", "all"):
        report("extract", dict(extract(segments, root, workers=args.workers, shard=shard, retry_failed=retry)))
    if args.stage == "all" and shard != (0, 1):
        print(
            "pack skipped: it reads every machine's extracted clips, so run `pack` once when all are done",
            file=sys.stderr,
        )
    elif args.stage in ("pack", "all"):
        summary = pack(
            segments,
            root,
            args.out,
            labels_csv=args.labels,
            val_fraction=args.val_fraction,
            workers=args.workers,
            chunk_bytes=args.chunk_bytes,
            audio_format=args.audio_format,
            balance_tiers=args.balance_tiers,
        )
        report("pack", summary)
    failures = sum(1 for r in read_manifest(root, "extract").values() if r["status"] != "ok")
    print(
        f"done in {time.perf_counter() - started:.1f} s; manifests in {_manifest_dir(root)} ({failures} extract "
        "failures, each with its reason)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
