"""Small real video files named after real AudioSet evaluation YTIDs, for tests, benchmarks and the demo.

The clips are genuinely encoded (MPEG-4 or H.264 video, AAC audio, in MP4 or Matroska) with PyAV, so the
preparation pipeline decodes them exactly as it decodes YouTube downloads. Each frame's colour encodes the tenth
of the clip it belongs to (``frame_colour``), so a test can tell which of the ten equally spaced frames it got;
the left channel is a 440 Hz tone and the right one 660 Hz.

Usage: ``python -m audioclip.data.audioset.testmedia OUT_DIR --n 12`` writes ``OUT_DIR/videos/*`` and
``OUT_DIR/segments.csv`` (rows of the official ``eval_segments.csv`` for those YTIDs).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from audioclip.data.provenance import mark_synthetic

# The first rows of the official eval_segments.csv (AudioSet, CC BY 4.0): real YTIDs, times and labels.
EVAL_ROWS = (
    '--4gqARaEJE, 0.000, 10.000, "/m/068hy,/m/07q6cd_,/m/0bt9lr,/m/0jbk"',
    '--BfvyPmVMo, 20.000, 30.000, "/m/03l9g"',
    '--U7joUcTCo, 0.000, 10.000, "/m/01b_21"',
    '--i-y1v8Hy8, 0.000, 9.000, "/m/04rlf,/m/09x0r,/t/dd00004,/t/dd00005"',
    '-0BIyqJj9ZU, 30.000, 40.000, "/m/07rgt08,/m/07sq110,/t/dd00001"',
    '-0CamVQdP_Y, 0.000, 6.000, "/m/04rlf,/m/07pbtc8,/m/09x0r"',
    '-0Gj8-vB1q4, 30.000, 40.000, "/m/0140xf,/m/02cjck,/m/04rlf"',
    '-0RWZT-miFs, 420.000, 430.000, "/m/03v3yw,/m/0k4j"',
    '-0YUDn-1yII, 30.000, 40.000, "/m/02cjck,/m/04rlf"',
    '-0jeONf82dE, 21.000, 31.000, "/m/03k3r,/m/04rlf,/m/07q5rw0,/m/09x0r,/m/0jbk"',
    '-0nqfRcnAYE, 370.000, 380.000, "/m/04brg2"',
    '-0p7hKXZ1ww, 30.000, 40.000, "/g/122z_qxw,/m/09x0r"',
    '-0vPFx-wRRI, 30.000, 40.000, "/m/025_jnm,/m/04rlf"',
    '-0xzrMun0Rs, 30.000, 40.000, "/m/01g90h,/m/04rlf"',
    '-0yRK50zyTI, 30.000, 40.000, "/m/07pzfmf,/m/09x0r"',
    '-116CjQ3MAg, 160.000, 170.000, "/m/015p6,/m/0chx_,/t/dd00128"',
)
SEGMENTS_HEADER = "# Segments csv: rows of eval_segments.csv\n# YTID, start_seconds, end_seconds, positive_labels\n"
TONES_HZ = (440.0, 660.0)  # left, right


def frame_colour(k: int) -> tuple[int, int, int]:
    """The RGB colour of frames in the k-th tenth of a clip; far apart so JPEG and YUV 4:2:0 keep them apart."""
    return (25 * k, 250 - 25 * k, 60 + 120 * (k % 2))


def nearest_frame_index(rgb: Sequence[float]) -> int:
    """Which tenth of its clip a decoded frame comes from, by the nearest ``frame_colour``."""
    distances = [sum((a - b) ** 2 for a, b in zip(rgb, frame_colour(k), strict=True)) for k in range(10)]
    return int(np.argmin(distances))


def write_test_video(
    path: str | Path,
    *,
    seconds: float = 2.0,
    fps: int = 8,
    size: tuple[int, int] = (64, 48),
    channels: int = 2,
    sample_rate: int = 22_050,
    codec: str = "mpeg4",
    noise: float = 0.0,
    seed: int = 0,
) -> Path:
    """Write a clip: coloured frames (see ``frame_colour``) and tones; ``channels=0`` leaves out the audio track.

    ``noise`` adds white noise of that amplitude (full scale 1) to frames and audio, to give a realistic compressed
    size in benchmarks.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = size
    with av.open(str(path), "w") as container:
        video = container.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = None
        if channels:
            audio = container.add_stream("aac", rate=sample_rate)
            audio.layout = "mono" if channels == 1 else "stereo"
        num_frames = round(seconds * fps)
        for i in range(num_frames):
            tenth = min(9, int(10 * i / num_frames))
            image = np.empty((height, width, 3), dtype=np.float32)
            image[:] = frame_colour(tenth)
            if noise:
                image += rng.normal(0, 255 * noise, image.shape)
            frame = av.VideoFrame.from_ndarray(image.clip(0, 255).astype(np.uint8), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            container.mux(video.encode(frame))
        container.mux(video.encode())
        if audio is not None:
            t = np.arange(round(seconds * sample_rate)) / sample_rate
            wave = np.stack([0.5 * np.sin(2 * np.pi * TONES_HZ[c] * t) for c in range(channels)])
            if noise:
                wave += rng.normal(0, noise, wave.shape)
            wave = wave.clip(-1, 1).astype(np.float32)
            block = 1024
            for start in range(0, wave.shape[1], block):
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(wave[:, start : start + block]), format="fltp", layout=audio.layout.name
                )
                frame.sample_rate, frame.pts = sample_rate, start
                container.mux(audio.encode(frame))
            container.mux(audio.encode())
    return path


def truncate(path: str | Path, keep: float = 0.5) -> Path:
    """Cut a file to ``keep`` of its bytes, like an interrupted download."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def write_test_set(out_dir: str | Path, n: int = 8) -> tuple[Path, Path]:
    """Write ``n`` clips (at most 16) named after real eval YTIDs and their segment list.

    Clip ``i`` is stereo, except: every 4th (i % 4 == 1) is mono at 48 kHz, i == 2 has no audio track (extract
    records it as failed) and i == 3 is truncated (failed too). Names alternate between ``{YTID}_{start}.mp4`` and
    ``{YTID}.mkv``. Returns (videos directory, segments.csv).
    """
    if not 1 <= n <= len(EVAL_ROWS):
        raise ValueError(f"--n must be in 1..{len(EVAL_ROWS)}, got {n}")
    out_dir = Path(out_dir)
    videos = out_dir / "videos"
    rows = EVAL_ROWS[:n]
    for i, row in enumerate(rows):
        ytid, start = row.split(", ")[:2]
        name = f"{ytid}_{start}.mp4" if i % 2 == 0 else f"{ytid}.mkv"
        channels = 0 if i == 2 else 1 if i % 4 == 1 else 2
        rate = 48_000 if i % 4 == 1 else 22_050
        written = write_test_video(videos / name, channels=channels, sample_rate=rate, seed=i)
        if i == 3:
            truncate(written)
    segments = out_dir / "segments.csv"
    segments.write_text(SEGMENTS_HEADER + "\n".join(rows) + "\n")
    mark_synthetic(out_dir, "audioclip.data.audioset.testmedia")
    return videos, segments


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write small AudioSet-like test videos and their segment list.")
    parser.add_argument("out_dir", help="writes OUT_DIR/videos/ and OUT_DIR/segments.csv")
    parser.add_argument("--n", type=int, default=12, help=f"number of clips (1..{len(EVAL_ROWS)})")
    args = parser.parse_args(argv)
    videos, segments = write_test_set(args.out_dir, args.n)
    print(f"wrote {args.n} clips to {videos} and their segment list to {segments}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
