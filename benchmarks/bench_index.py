"""Inference throughput of `audioclip index` with the paper-size AudioCLIP: clips/s in fp32 and `precision auto`.

Writes a folder of 5-s 44.1 kHz clips (the synthetic ESC-50 sounds) and a seeded random paper-size checkpoint, picks
the batch size with the best clips/s of the audio forward pass (a short sweep, in the auto precision), then runs
`audioclip index` over the folder at that batch size once in fp32 and once with `--precision auto`, each in its own
process (so each peak RSS is its own). `index_clips_per_s` counts the whole index build (decoding, forward pass,
saving); loading the model is reported apart. Prints one JSON line.

    python benchmarks/bench_index.py                  # 64 clips
    python benchmarks/bench_index.py --clips 16 --batch-sizes 4 8   # a quick smoke run
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sweep(checkpoint: str, model: str, batch_sizes: list[int], seconds: float) -> dict[int, float]:
    """clips/s of the audio forward pass at each batch size (one warm-up, then one timed batch), auto precision."""
    from audioclip.inference import load

    net = load(checkpoint, model_name=model, precision="auto")
    rates = {}
    with torch.no_grad():
        for size in batch_sizes:
            audio = torch.randn(size, 1, int(44_100 * seconds)) * 3000
            net.encode_audio(audio)  # oneDNN builds its primitives for a new shape on first use
            start = time.perf_counter()
            net.encode_audio(audio)
            rates[size] = round(size / (time.perf_counter() - start), 3)
    return rates


def index(folder: str, checkpoint: str, model: str, precision: str, batch_size: int) -> dict:
    from audioclip.evaluation.index import build_index
    from audioclip.inference import load

    start = time.perf_counter()
    net = load(checkpoint, model_name=model, precision=precision)
    loaded = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        stats = build_index(net, folder, Path(out) / "index.pt", checkpoint, batch_size=batch_size, progress=False)
    elapsed = time.perf_counter() - loaded
    return {
        "precision": net.precision,
        "chosen_because": net.precision_line,
        "clips": stats["added"],
        "index_clips_per_s": round(stats["added"] / elapsed, 3),
        "load_s": round(loaded - start, 1),
        "peak_rss_mb": round(_peak_rss_mb()),
    }


def _child(*args: str) -> dict:
    child = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if child.returncode != 0:
        raise SystemExit(f"bench_index: {' '.join(args[:2])} failed:\n{child.stderr[-2000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=64, help="clips in the folder (default 64)")
    parser.add_argument("--seconds", type=float, default=5.0, help="clip length (the ESC-50 clips': 5 s)")
    parser.add_argument("--model", default="audioclip", help="registered AudioCLIP (default: the paper's size)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16, 32], help="batch sizes swept")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        kind, *rest = args.child
        if kind == "sweep":
            checkpoint, model, seconds, *sizes = rest
            result = {"rates": sweep(checkpoint, model, [int(s) for s in sizes], float(seconds))}
        else:
            folder, checkpoint, model, precision, batch_size = rest
            result = index(folder, checkpoint, model, precision, int(batch_size))
        print(json.dumps(result))
        return

    from audioclip.data.synthetic import write_esc50
    from audioclip.models import create_model

    threads = ["--threads", str(args.threads)] if args.threads else []
    with tempfile.TemporaryDirectory() as tmp:
        classes = min(50, max(1, args.clips // 8))
        root = write_esc50(Path(tmp) / "clips", clips_per_class=-(-args.clips // classes), classes=classes,
                           progress=False)  # fmt: skip
        folder = str(root / "audio")
        torch.manual_seed(0)
        checkpoint = str(Path(tmp) / f"{args.model}.pt")
        torch.save(create_model(args.model).state_dict(), checkpoint)
        common = [checkpoint, args.model]
        rates = _child(*threads, "--child", "sweep", *common, str(args.seconds), *map(str, args.batch_sizes))["rates"]
        best = max(rates, key=rates.get)
        runs = {p: _child(*threads, "--child", "index", folder, *common, p, best) for p in ("32-true", "auto")}
    fp32, auto = runs["32-true"], runs["auto"]
    print(
        json.dumps(
            {
                "benchmark": "index",
                "model": args.model,
                "clips": fp32["clips"],
                "clip_seconds": args.seconds,
                "threads": torch.get_num_threads() if not args.threads else args.threads,
                "batch_size_sweep_clips_per_s": rates,
                "batch_size": int(best),
                "fp32_clips_per_s": fp32["index_clips_per_s"],
                "fp32_peak_rss_mb": fp32["peak_rss_mb"],
                "auto_precision": auto["precision"],
                "auto_chosen_because": auto["chosen_because"],
                "auto_clips_per_s": auto["index_clips_per_s"],
                "auto_peak_rss_mb": auto["peak_rss_mb"],
                "auto_vs_fp32": round(auto["index_clips_per_s"] / fp32["index_clips_per_s"], 2),
                "load_s": fp32["load_s"],
            }
        )
    )


if __name__ == "__main__":
    main()
