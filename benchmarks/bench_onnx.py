"""`make bench-onnx`: the audio encoder's clips/s in PyTorch eager fp32, PyTorch under `precision auto` and onnxruntime,
measured in the same run on the same clips, with the ratios; the export's own parity figures beside them.

Exports a seeded random AudioCLIP (paper-size by default: speed does not depend on the weights' values) with
`audioclip export --onnx` into a temporary folder, then times `encode_audio` on a batch of 5-s 44.1 kHz clips in
each backend: one warm-up, then `--repeats` timed batches, taking the best (the machine is shared: the least
disturbed measurement). The three runs alternate, so a load spike cannot favour one. Prints one JSON line.

    python benchmarks/bench_onnx.py                                   # paper-size, batch 8
    python benchmarks/bench_onnx.py --model audioclip-tiny --batch 4  # a quick smoke run
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def clips_per_second(encode, audio: torch.Tensor) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        encode(audio)
    return audio.shape[0] / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="audioclip", help="registered model name (default: the paper's size)")
    parser.add_argument("--batch", type=int, default=8, help="clips per forward pass")
    parser.add_argument("--repeats", type=int, default=3, help="timed batches per backend (the best counts)")
    args = parser.parse_args(argv)

    from audioclip.export.folder import export_model
    from audioclip.inference import load
    from audioclip.models import create_model

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "weights.pt"
        torch.save(create_model(args.model).state_dict(), checkpoint)
        start = time.perf_counter()
        config = export_model(str(checkpoint), Path(tmp) / "export", onnx=True)
        export_seconds = time.perf_counter() - start
        models = {
            "torch_fp32": load(checkpoint, precision="32-true"),
            "torch_auto": load(checkpoint, precision="auto"),
            "onnxruntime": load(Path(tmp) / "export", backend="onnxruntime"),
        }
        audio = torch.randn(args.batch, 1, config["onnx"]["audio_samples"]) * 3000
        rates: dict[str, list[float]] = {name: [] for name in models}
        for name, model in models.items():
            clips_per_second(model.encode_audio, audio)  # warm-up: kernels and memory are set up on first use
        for _ in range(args.repeats):
            for name, model in models.items():
                rates[name].append(clips_per_second(model.encode_audio, audio))
    best = {name: max(values) for name, values in rates.items()}
    print(json.dumps({
        "bench": "onnx",
        "model": args.model,
        "batch": args.batch,
        "clip_seconds": config["onnx"]["audio_samples"] / 44_100,
        "torch_threads": torch.get_num_threads(),
        "auto_precision": models["torch_auto"].precision,
        "clips_per_s": {name: round(value, 3) for name, value in best.items()},
        "onnxruntime_vs_torch_fp32": round(best["onnxruntime"] / best["torch_fp32"], 3),
        "onnxruntime_vs_torch_auto": round(best["onnxruntime"] / best["torch_auto"], 3),
        "torch_auto_vs_fp32": round(best["torch_auto"] / best["torch_fp32"], 3),
        "parity_max_abs_diff": {k: v["max_abs_diff"] for k, v in config["onnx"]["parity"].items()},
        "opset": config["onnx"]["opset"],
        "export_seconds": round(export_seconds, 1),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
