"""GPU benchmark, one script within ~4 minutes on one GPU: is a run bound by compute or by data?

1. The paper-size fine-tuning step (FinetuneModule: audio head, frozen class-name text; 5-s clips, ESC-50's) and the
   full-training step (FullTrainingModule: audio + one video frame + text, all three heads; 10-s clips, AudioSet's)
   at batch 64, in fp32 (TF32 matmuls, as `audioclip fit` runs it: `--float32_matmul_precision high`) and
   bf16-mixed + channels-last: samples/s and peak GPU memory.
2. The AudioSet loader's feed rate (`AudioSetDataModule` over `npy` shards, audio + frames, training
   augmentations) with N workers, against what the full-training step consumes: `bound` says which is slower.

Without CUDA it runs the same code with the tiny models and small batches (a smoke run, what the test runs; its
figures say nothing about a GPU). Prints one JSON line.

    python benchmarks/bench_gpu.py                          # on a GPU machine: paper size, batch 64
    python benchmarks/bench_gpu.py --workers 16 --steps 20  # more loader workers, longer timing
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from audioclip.models.fbsp import normalize_fbsp_grads_
from audioclip.tasks import FinetuneModule, FullTrainingModule
from audioclip.tasks.base import optimizer_group

SAMPLE_RATE = 44_100


# the paper's optimiser as the phase configs set it
SGD_GROUP = Path(__file__).resolve().parents[1] / "conf" / "optim" / "sgd.yaml"

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_rate(kind: str, model: str, bf16: bool, batch: int, seconds: float, steps: int, device: torch.device) -> dict:
    """samples/s and peak memory of `steps` training steps after two warm-up steps."""
    torch.manual_seed(0)
    optim = optimizer_group(SGD_GROUP, lr=5e-5 if kind == "finetune" else 1e-4)  # the phase files' rates
    module = FinetuneModule(model=model, num_classes=50, **optim) if kind == "finetune" else FullTrainingModule(
        model=model, **optim
    )
    module = module.to(device).train()
    if bf16:
        module.to(memory_format=torch.channels_last)
    net = module.clip_model
    optimizer = module.configure_optimizers()["optimizer"]
    gen = torch.Generator().manual_seed(0)
    audio = (torch.randn(batch, 1, int(SAMPLE_RATE * seconds), generator=gen) * 3000).to(device)
    names = [f"class {i}" for i in range(50)]
    if kind == "finetune":
        with torch.no_grad():
            text = net.encode_text(net.tokenize(names))
        class_text = text / text.norm(dim=-1, keepdim=True)
        target = torch.randint(0, 50, (batch,), generator=gen).to(device)
    else:
        image = torch.randn(batch, 3, 224, 224, generator=gen).to(device)
        tokens = net.tokenize([names[i % 50] for i in range(batch)])

    def one_step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            if kind == "finetune":
                loss = net.loss({"audio": net.embed(audio)["audio"], "text": class_text[target]})
            else:
                loss = net.loss(net.embed(audio, image, tokens))
        loss.backward()
        normalize_fbsp_grads_(net)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):  # cuDNN / oneDNN pick and build their kernels on first use
        one_step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        one_step()
    _sync(device)
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    return {"samples_per_s": round(steps * batch / elapsed, 2), "peak_mem_mb": None if peak is None else round(peak)}


def write_npy_shards(root: Path, clips: int, seconds: float) -> str:
    """`clips` synthetic AudioSet clips (noise audio, ten JPEG frames each) packed into `npy` shards, as
    `audioclip prepare audioset pack --audio-format npy` writes them; returns the shard directory."""
    from PIL import Image

    from audioclip.data.audioset.extract import clip_dir
    from audioclip.data.audioset.metadata import NUM_FRAMES, Segment
    from audioclip.data.audioset.pack import pack

    rng = np.random.default_rng(0)
    segments, records = [], []
    for i in range(clips):
        segment = Segment(ytid=f"bench{i:06d}", start=0.0, end=seconds, mids=("/m/09x0r",))  # Speech
        directory = clip_dir(root, segment.ytid)
        directory.mkdir(parents=True, exist_ok=True)
        audio = (rng.standard_normal((int(SAMPLE_RATE * seconds), 1)) * 3000).astype(np.int16)
        sf.write(directory / "audio.flac", audio, SAMPLE_RATE, subtype="PCM_16")
        for k in range(NUM_FRAMES):
            pixels = rng.integers(0, 255, (360, 480, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(directory / f"{k}.jpg", quality=90)
        segments.append(segment)
        records.append(json.dumps({"ytid": segment.ytid, "status": "ok"}))
    (root / "manifests").mkdir(parents=True, exist_ok=True)
    (root / "manifests" / "extract.0-of-1.jsonl").write_text("\n".join(records) + "\n")
    pack(segments, root, root / "shards", workers=1, audio_format="npy")
    return str(root / "shards")


def feed_rate(shards: str, batch: int, workers: int, seconds: float, epochs: int) -> float:
    """Items/s the AudioSet training loader delivers with `workers` workers over `epochs` whole epochs, after the
    first batch (the workers' start-up). Whole epochs: a loader left mid-epoch keeps its workers waiting."""
    from audioclip.data.audioset.datamodule import AudioSetDataModule

    data = AudioSetDataModule(train_dir=shards, batch_size=batch, num_workers=workers, clip_seconds=seconds)
    data.setup("fit")
    loader = data.train_dataloader()
    items, start = 0, 0.0
    for _ in range(epochs):
        for got in loader:
            if not start:
                start = time.perf_counter()
            else:
                items += len(got["audio"])
    elapsed = time.perf_counter() - start
    # the persistent workers ignore SIGTERM (`IgnoreTerminationSignals`), so the exit would wait for them forever
    if getattr(loader, "_iterator", None) is not None:
        loader._iterator._shutdown_workers()
    return round(items / elapsed, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cuda, cpu")
    parser.add_argument("--model", help="default: audioclip on CUDA, audioclip-tiny on CPU")
    parser.add_argument("--batch-size", type=int, help="default: 64 on CUDA, 4 on CPU")
    parser.add_argument("--steps", type=int, help="timed steps per setting (default: 10 on CUDA, 2 on CPU)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="loader workers")
    parser.add_argument("--clips", type=int, help="clips in the shards (default: 2 batches)")
    parser.add_argument("--audioset-seconds", type=float, help="AudioSet clip length (default: 10 on CUDA, 2 on CPU)")
    args = parser.parse_args()
    name = args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    gpu = device.type == "cuda"
    model = args.model or ("audioclip" if gpu else "audioclip-tiny")
    batch = args.batch_size or (64 if gpu else 4)
    steps = args.steps or (10 if gpu else 2)
    audioset_seconds = args.audioset_seconds or (10.0 if gpu else 2.0)
    finetune_seconds = 5.0 if gpu else 1.0
    if gpu:
        torch.backends.cudnn.benchmark = True  # conf/trainer.yaml's `benchmark: true`
    torch.set_float32_matmul_precision("high")  # `audioclip fit`'s default: TF32 outside the fbsp front end

    result: dict = {
        "benchmark": "gpu",
        "device": torch.cuda.get_device_name(device) if gpu else "cpu (smoke run: tiny model, small batches)",
        "model": model,
        "batch_size": batch,
        "steps": steps,
        "finetune_clip_seconds": finetune_seconds,
        "audioset_clip_seconds": audioset_seconds,
    }
    for kind, seconds in (("finetune", finetune_seconds), ("full", audioset_seconds)):
        for name, bf16 in (("fp32", False), ("bf16", True)):
            rate = step_rate(kind, model, bf16, batch, seconds, steps, device)
            result[f"{kind}_{name}_samples_per_s"] = rate["samples_per_s"]
            result[f"{kind}_{name}_peak_mem_mb"] = rate["peak_mem_mb"]
        result[f"{kind}_bf16_speedup"] = round(
            result[f"{kind}_bf16_samples_per_s"] / result[f"{kind}_fp32_samples_per_s"], 2
        )
    with tempfile.TemporaryDirectory() as tmp:
        shards = write_npy_shards(Path(tmp), args.clips or 2 * batch, audioset_seconds)
        feed = feed_rate(shards, batch, args.workers, audioset_seconds, epochs=2)
    consumed = result["full_bf16_samples_per_s"]
    result.update(
        {
            "loader_workers": args.workers,
            "loader_items_per_s": feed,
            "full_bf16_step_consumes_items_per_s": consumed,
            "bound": "data" if feed < consumed else "compute",
        }
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
