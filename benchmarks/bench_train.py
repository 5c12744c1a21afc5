"""Training throughput of the paper-size FinetuneModule step on CPU: fp32 vs bf16-mixed + channels_last, the bf16
step with the filter bank built twice (as before the spectrogram kept it for the TTF loss) and once, and the real
training loop against the raw step.

Prints one JSON line: samples/s and peak RSS for each setting (each run in its own process), the speed-up, and the
largest difference between the bf16 and fp32 audio embeddings (L2-normalised) of the same batch and weights.
Batch 8, 5 s clips at 44.1 kHz, 2 threads.
- `bf16_old_samples_per_s`, `step_speedup_new_vs_old`: the bf16 step as it was (`reuse_filter_bank = False`)
  against today's, in the same run.
- `fit_samples_per_s`, `fit_vs_step`: `audioclip fit` as a user runs it (`measure_fit`), against the raw bf16 step;
  `fit_inside_step_s` / `fit_between_steps_s` split its time per step (see docs/performance.md).
For scale, the reference's fp32 fine-tuning step on this 2-core machine: 1.23 samples/s, 7.2 GB peak RSS.

    python benchmarks/bench_train.py                    # 3 timed raw steps each, 6 timed steps of the loop
    python benchmarks/bench_train.py --fit-steps 0      # the raw steps only
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from audioclip.models.esresnext import ESResNeXtFBSP
from audioclip.tasks import FinetuneModule
from audioclip.tasks.base import optimizer_group

# the paper's optimiser as the phase configs set it
SGD_GROUP = Path(__file__).resolve().parents[1] / "conf" / "optim" / "sgd.yaml"

def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _step(module: FinetuneModule, optimizer, batch, bf16: bool) -> None:
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with ctx:
        audio = module.clip_model.embed(batch["audio"])["audio"]
        loss = module.clip_model.loss({"audio": audio, "text": module._class_text[batch["target"]]})
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def measure(
    bf16: bool, steps: int, batch_size: int, seconds: float, new: bool = True, model: str = "audioclip"
) -> dict:
    """samples/s of the raw step; `new=False`: the step that builds the filter bank twice (spectrogram, TTF loss)."""
    ESResNeXtFBSP.reuse_filter_bank = new
    torch.manual_seed(0)
    module = FinetuneModule(model=model, num_classes=50, **optimizer_group(SGD_GROUP, lr=5e-5)).train()
    if bf16:
        module.model.audio.to(memory_format=torch.channels_last)
    with torch.no_grad():
        text = module.clip_model.encode_text(module.clip_model.tokenize([f"class {i}" for i in range(50)]))
    module._class_text = text / text.norm(dim=-1, keepdim=True)
    optimizer = module.configure_optimizers()["optimizer"]
    gen = torch.Generator().manual_seed(0)
    batch = {
        "audio": torch.randn(batch_size, 1, int(44100 * seconds), generator=gen) * 3000,
        "target": torch.randint(0, 50, (batch_size,), generator=gen),
    }
    # embeddings of the same initial weights, to compare the precisions
    module.eval()
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.no_grad(), ctx:
        emb = module.clip_model.embed(batch["audio"][:2])["audio"].float()
    module.train()
    for _ in range(2):  # warm-up: oneDNN creates its forward and backward primitives on first use
        _step(module, optimizer, batch, bf16)
    start = time.perf_counter()
    for _ in range(steps):
        _step(module, optimizer, batch, bf16)
    elapsed = time.perf_counter() - start
    return {"samples_per_s": round(steps * batch_size / elapsed, 3), "peak_rss_mb": round(_peak_rss_mb()), "emb": emb}


class _Timed(Exception):
    """Raised once the timed steps of the real loop are done."""


def measure_fit(
    steps: int, warmup: int, batch_size: int, workers: int, extra: list[str], model: str = "audioclip"
) -> dict:
    """`audioclip fit` as a user runs it (conf/trainer.yaml + conf/finetune-esc50.yaml: W&B offline, progress bar,
    checkpoint callbacks), on a synthetic 5-s ESC-50 tree, paper-size model from scratch, bf16-mixed (channels-last
    follows), validation off; samples/s over `steps` steps after `warmup`, from the start of one training batch to
    the start of the one `steps` later. Also the time per step spent inside the batch (forward, backward, optimizer
    and the module's per-step hooks) and between batches (waiting for the loader, Lightning's loop, callbacks)."""
    import tempfile

    from audioclip.data.synthetic import write_esc50
    from audioclip.tasks.cli import run_lightning_cli

    starts: list[float] = []
    ends: list[float] = []
    batch_start, batch_end = FinetuneModule.on_train_batch_start, FinetuneModule.on_train_batch_end

    def timed_start(self, batch, batch_idx):
        starts.append(time.perf_counter())
        return batch_start(self, batch, batch_idx)

    def timed_end(self, outputs, batch, batch_idx):
        result = batch_end(self, outputs, batch, batch_idx)
        ends.append(time.perf_counter())
        if len(starts) > warmup + steps:
            raise _Timed  # the figures are in: no need for the rest of the run (its test, its last checkpoint)
        return result

    FinetuneModule.on_train_batch_start, FinetuneModule.on_train_batch_end = timed_start, timed_end
    conf = Path(__file__).resolve().parents[1] / "conf"
    total = warmup + steps + 2
    with tempfile.TemporaryDirectory() as tmp:
        # folds 2-5 train: enough clips that the timed steps stay inside the first epoch
        per_class = -(-total * batch_size * 5 // (4 * 50)) + 1
        root = write_esc50(Path(tmp) / "esc50", clips_per_class=per_class, classes=50, progress=False)
        run = Path(tmp) / "run"
        with contextlib.suppress(_Timed):
            run_lightning_cli(
            ["fit", "--config", str(conf / "trainer.yaml"), "--config", str(conf / "finetune-esc50.yaml"),
             "--model.init_args.model", model, "--model.init_args.init_from", "null",
             "--data.init_args.root", str(root),
             "--data.init_args.batch_size", str(batch_size), "--data.init_args.num_workers", str(workers),
             "--data.init_args.val_fraction", "0.05", "--trainer.precision", "bf16-mixed",
             "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.max_steps", str(total),
             "--trainer.limit_val_batches", "0", "--trainer.limit_test_batches", "1",
             "--trainer.default_root_dir", str(run), "--trainer.logger.init_args.save_dir", str(run), *extra]
            )  # fmt: skip
    timed = slice(warmup, warmup + steps)
    inside = sum(e - s for s, e in zip(starts[timed], ends[timed], strict=True)) / steps
    elapsed = starts[warmup + steps] - starts[warmup]
    return {
        "samples_per_s": round(steps * batch_size / elapsed, 3),
        "inside_step_s": round(inside, 3),
        "between_steps_s": round(elapsed / steps - inside, 3),
        "peak_rss_mb": round(_peak_rss_mb()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="audioclip", help="registered AudioCLIP (audioclip-tiny: a smoke run)")
    parser.add_argument("--fit-steps", type=int, default=6, help="timed steps of the real loop (0: skip it)")
    parser.add_argument("--fit-warmup", type=int, default=3, help="steps of the real loop before the timing")
    parser.add_argument("--workers", type=int, default=2, help="loader workers of the real loop")
    parser.add_argument("--fit-args", nargs="*", default=[], help="more `audioclip fit` settings for the real loop")
    # one setting, in a child process
    parser.add_argument("--mode", choices=["fp32", "bf16-old", "bf16", "fit"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        torch.set_num_threads(args.threads)
        if args.mode == "fit":
            with contextlib.redirect_stdout(sys.stderr):  # the loop's own output is not this child's result
                result = measure_fit(
                    args.fit_steps, args.fit_warmup, args.batch_size, args.workers, args.fit_args, args.model
                )
        else:
            bf16, new = args.mode.startswith("bf16"), args.mode != "bf16-old"
            result = measure(bf16, args.steps, args.batch_size, args.seconds, new, args.model)
        torch.save(result, sys.stdout.buffer)
        return
    # each setting in its own process, so that each peak RSS is its own
    runs = {}
    for mode in ("fp32", "bf16-old", "bf16", *(["fit"] if args.fit_steps else [])):
        child = subprocess.run([sys.executable, __file__, "--mode", mode, *sys.argv[1:]], capture_output=True)
        if child.returncode != 0:
            raise SystemExit(f"bench_train: the {mode} run failed:\n{child.stderr.decode()[-3000:]}")
        runs[mode] = torch.load(io.BytesIO(child.stdout), weights_only=True)
    fp32, bf16 = runs["fp32"], runs["bf16"]
    result = {
        "benchmark": "finetune-step",
        "model": args.model,
        "batch_size": args.batch_size,
        "clip_seconds": args.seconds,
        "threads": args.threads,
        "steps": args.steps,
        "fp32_samples_per_s": fp32["samples_per_s"],
        "fp32_peak_rss_mb": fp32["peak_rss_mb"],
        "bf16_channels_last_samples_per_s": bf16["samples_per_s"],
        "bf16_peak_rss_mb": bf16["peak_rss_mb"],
        "speedup": round(bf16["samples_per_s"] / fp32["samples_per_s"], 2),
        # the bf16 step that builds the filter bank twice, measured in this run
        "bf16_old_samples_per_s": runs["bf16-old"]["samples_per_s"],
        "step_speedup_new_vs_old": round(bf16["samples_per_s"] / runs["bf16-old"]["samples_per_s"], 2),
        "max_abs_emb_diff_bf16_vs_fp32": float((bf16["emb"] - fp32["emb"]).abs().max()),
        "reference_fp32_samples_per_s": 1.23,
        "reference_bf16_autocast_samples_per_s": 3.34,
    }
    if "fit" in runs:
        fit = runs["fit"]
        result.update(
            {
                "fit_steps": args.fit_steps,
                "fit_workers": args.workers,
                "fit_samples_per_s": fit["samples_per_s"],
                # the real loop against the raw bf16 step of this run: 1.0 = the loop costs nothing
                "fit_vs_step": round(fit["samples_per_s"] / bf16["samples_per_s"], 2),
                "fit_inside_step_s": fit["inside_step_s"],
                "fit_between_steps_s": fit["between_steps_s"],
                "fit_peak_rss_mb": fit["peak_rss_mb"],
            }
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
