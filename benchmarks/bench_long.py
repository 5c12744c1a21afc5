"""`make bench-long`: audio of any length, window by window (`audioclip classify FILE --window 5 --hop 2.5`): time and
peak memory against the recording's length. Prints one JSON line.

Writes recordings of each length (`--minutes`, default 15, 30 and 60) at 48 kHz mono, so every block is resampled
too, block by block without holding the file (a 60-min file is 330 MB of PCM_16 on disk, 690 MB as float32 at
44.1 kHz if it were decoded whole). Each length is classified in a fresh process (`audioclip.classify_windows` with
the model given, seeded random weights: speed and memory do not depend on their values), which reports its own wall
time and peak resident memory (`ru_maxrss`). The line gives, per length, seconds, seconds per audio minute and peak
RSS; `linear` is the time per audio minute of the longest over the shortest (1.0 = exactly linear); `rss_growth_mb`
is how much more the longest needed than the shortest (0 = memory does not grow with length); `under_1_5_gb` is the
longest's peak against the issue's bound.

    python benchmarks/bench_long.py                                # paper-size model, 15/30/60 min (long on a CPU)
    python benchmarks/bench_long.py --model audioclip-tiny         # the tiny model: minutes, not an hour
    python benchmarks/bench_long.py --minutes 1 2 --model audioclip-tiny   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

RATE = 48000
LABELS = ["dog", "rain", "siren", "speech", "engine"]


def write_recording(path: Path, minutes: float) -> None:
    """Noise with a tone every 30 s, written a minute at a time (the benchmark never holds the whole file either)."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", RATE, 1, subtype="PCM_16") as out:
        left = round(minutes * 60 * RATE)
        t = np.arange(60 * RATE) / RATE
        while left > 0:
            n = min(left, 60 * RATE)
            block = rng.standard_normal(n) * 0.05 + 0.3 * np.sin(2 * np.pi * 440 * t[:n]) * ((t[:n] % 30) < 2)
            out.write(block.astype(np.float32))
            left -= n


def rss_mb() -> float:
    """This process's resident memory now (VmRSS), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class RssSampler(threading.Thread):
    """The largest resident memory seen while the window-by-window work runs, sampled every 50 ms."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.done = rss_mb(), threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.peak = max(self.peak, rss_mb())


def classify_one(path: str, weights: str, model_name: str, precision: str, window: float, hop: float,
                 batch: int) -> dict:  # fmt: skip
    """Runs in the child process: load a seeded model, classify the file window by window, report time and memory
    (the process's high-water mark, which includes loading the weights, and the resident memory after loading and
    at its largest during the windows, which is what the length of the file could change)."""
    import gc

    from audioclip.evaluation.timeline import classify_windows, embed_labels
    from audioclip.inference import load

    # as `audioclip classify --checkpoint ... --window` does: no image encoder, the text encoder dropped once the
    # labels are embedded
    model = load(weights, model_name, precision=precision, towers=("audio", "text"))
    labels = embed_labels(model, LABELS)
    model.drop_towers("text")
    gc.collect()
    loaded = rss_mb()
    sampler = RssSampler()
    sampler.start()
    start = time.perf_counter()
    timeline = classify_windows(model, path, labels, window=window, hop=hop, batch_size=batch)
    seconds = time.perf_counter() - start
    sampler.done.set()
    sampler.join()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"windows": len(timeline.rows), "seconds": round(seconds, 2), "peak_rss_mb": round(peak_kb / 1024, 1),
            "rss_after_load_mb": round(loaded, 1), "rss_peak_during_windows_mb": round(sampler.peak, 1),
            "rss_end_mb": round(rss_mb(), 1)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="audioclip", help="registered model name (default: the paper's size)")
    parser.add_argument("--minutes", type=float, nargs="+", default=[15, 30, 60], help="recording lengths")
    parser.add_argument("--precision", default="auto", help="as `audioclip classify --precision` (default auto)")
    parser.add_argument("--window", type=float, default=5.0)
    parser.add_argument("--hop", type=float, default=2.5)
    parser.add_argument("--batch", type=int, default=4, help="windows per forward pass (classify_windows' default: 4)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(classify_one(*args.child, args.model, args.precision, args.window, args.hop, args.batch)))
        return 0

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        import torch

        from audioclip.models import create_model

        torch.manual_seed(0)  # seeded random weights, written once: the child only loads them
        weights = Path(tmp) / "weights.pt"
        torch.save(create_model(args.model).state_dict(), weights)
        for minutes in sorted(args.minutes):
            path = Path(tmp) / f"{minutes:g}min.wav"
            write_recording(path, minutes)
            child = [sys.executable, __file__, "--child", str(path), str(weights), "--model", args.model,
                     "--precision", args.precision, "--window", str(args.window), "--hop", str(args.hop),
                     "--batch", str(args.batch)]  # fmt: skip
            done = subprocess.run(child, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            if done.returncode:
                print(
                    f"bench-long: the {minutes:g}-min run failed: {done.stderr.strip().splitlines()[-1]}",
                    file=sys.stderr,
                )
                return 1
            result = json.loads(done.stdout.strip().splitlines()[-1])
            runs.append(
                {"minutes": minutes, **result, "seconds_per_audio_minute": round(result["seconds"] / minutes, 3)}
            )
            path.unlink()
    first, last = runs[0], runs[-1]
    print(json.dumps({
        "bench": "long-audio", "model": args.model, "precision": args.precision, "window": args.window,
        "hop": args.hop, "batch": args.batch, "input_rate": RATE, "runs": runs,
        "linear": round(last["seconds_per_audio_minute"] / first["seconds_per_audio_minute"], 3),
        "rss_growth_mb": round(last["rss_peak_during_windows_mb"] - first["rss_peak_during_windows_mb"], 1),
        "under_1_5_gb": last["peak_rss_mb"] < 1536, "cpu_count": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
