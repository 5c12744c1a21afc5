"""AudioSet's extract stage: each clip decoded into its audio track and ten equally spaced video frames.

The paper (Guzhov et al. 2021, sec. 4.1) uses, for each AudioSet segment, its audio track and ten video frames. The
k-th frame (k = 0..9) is the frame on screen at ``(k + 0.5) * D / 10`` seconds into the segment, the centres of ten
equal intervals of its duration ``D`` (the segment length, cut to the decoded audio length). A clip lands in
``ROOT/extracted/{YTID[:2]}/{YTID}/`` as ``audio.flac`` (44.1 kHz, int16, 1-2 channels) and ``0.jpg`` .. ``9.jpg``
(short side 256), written beside it and renamed into place, so a clip directory exists only when complete.

References: PyAV (FFmpeg bindings) for decoding and resampling; soundfile for FLAC.
"""

from __future__ import annotations

import io
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import av
import numpy as np
import soundfile as sf

from audioclip.constants import SAMPLE_RATE
from audioclip.data.audioset.manifests import pending, read_manifest, run_parallel
from audioclip.data.audioset.metadata import NUM_FRAMES, Segment, select_shard

FRAME_SHORT_SIDE = 256  # CLIP's preprocessing resizes to 224 next, so 256 leaves room for its centre crop
JPEG_QUALITY = 90
# FLAC's fastest level: measured ~7 % larger but 25 % faster to decode than the default, and decoding the audio is
# the largest cost of a streamed training item (benchmarks/bench_audioset.py)
FLAC_LEVEL = 0.0
MIN_AUDIO_SECONDS = 0.5  # shorter decoded audio is a broken clip, not a short one
# Decoded audio this much shorter than the container says is a truncated file (e.g. an interrupted download);
# half a second tolerates the usual mismatch of audio and video lengths in real uploads.
TRUNCATION_TOLERANCE = 0.5


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
    for segment in pending(select_shard(segments, shard), done, retry_failed):
        source = sources.get(segment.ytid)
        if source is not None and source["status"] == "ok":
            jobs.append((segment, source["path"], float(source["offset"])))
    return run_parallel("extract", root, shard, partial(extract_one, root=root), jobs, workers)
