"""AudioSet's download stage: each segment's time range fetched from YouTube with yt-dlp, one manifest line per YTID.

yt-dlp runs as a subprocess per clip (``--download-sections`` cuts the range with ffmpeg); how YouTube answers at
scale (throttling, gone videos, the back-off) is in ``youtube.py``. A failure is recorded with its reason and class,
never raised, so one bad video does not stop two million.

References: yt-dlp ``--download-sections``, ``--enable-file-urls``; imageio-ffmpeg's bundled ffmpeg.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from audioclip.data.audioset.manifests import pending, read_manifest, run_parallel
from audioclip.data.audioset.metadata import Segment, select_shard
from audioclip.data.audioset.youtube import TEMPORARY, Throttle, classify

DEFAULT_URL_TEMPLATE = "https://www.youtube.com/watch?v={ytid}"
# A small progressive stream is enough: frames are shrunk to a 256 short side and the audio is re-encoded anyway.
DEFAULT_FORMAT = "b[height<=?480]/bv*[height<=?480]+ba/b"
# What yt-dlp (and a browser) leaves beside a clip: fragments, info files, thumbnails, subtitles; never the media.
IGNORED_SUFFIXES = {".part", ".json", ".txt", ".ytdl", ".tmp", ".jpg", ".png", ".webp", ".vtt", ".srt"}


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
    todo = pending(select_shard(segments, shard), read_manifest(root, "sources"), retry_failed)
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
    return run_parallel("sources", root, shard, work, todo, workers, after=throttle.after)
