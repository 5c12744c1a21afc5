"""Where the paper-size fine-tuning step spends its time, by stage, in fp32 and bf16-mixed + channels-last.

The step of `FinetuneModule` (audio head trained, text frozen) is cut at its stage boundaries (detached tensors that
require grad), so each stage's forward and backward are timed on their own:

- `fbsp_weights`: materialising the filter bank (1025 x 2048 x 2, from m, fb, fc) for the spectrogram (the TTF
  loss, in `loss`, builds it a second time in this cut; the real step hands it the spectrogram's bank);
- `fbsp_projection`: windowed frames (B, 392, 2048) projected onto the real and imaginary filter banks (fp32 IEEE,
  whatever the autocast), and the power;
- `power_to_db`: the three-band reshape and `10 log10(max(power, 1e-18))`;
- `body`: ResNeXt-50 32x4d + attention blocks + `fc` (under autocast in bf16);
- `loss`: L2 normalisation, the audio-text contrastive loss and the TTF loss.

Then `torch.profiler` over one whole step lists the operators with the most self CPU time, and `roofline` sets the
step against what this machine can compute: the matrix work of the body (every convolution and `fc`, counted from
their shapes: forward, input gradient and weight gradient) and of the projection (forward and the filter banks'
gradient), divided by the rate of a large matrix product measured here in the same precision (`gemm_peak`). Its
`max_step_speedup` is the step's speed-up if that work ran at the measured rate and everything else in the body
(BatchNorm, ReLU, masks, residual adds, pooling, casts) cost nothing, the stages outside the body and the projection
unchanged. The rate of a 2048 x 2048 product is a measured reference, not a hardware limit (the best 1x1
convolutions match it), so the bound is an estimate of what kernel work could gain, not a proof. `conv_self_s` comes
from the profiled step, the stage times from the timed steps. (torch's `FlopCounterMode` is not used: it counts a
grouped convolution's backward as if it were dense, 16x too much here.)
Prints one JSON line per precision (`--precision fp32 bf16`), and with `--table` the profiler's table on stderr.

    python benchmarks/profile_step.py                       # batch 8, 5-s clips, both precisions
    python benchmarks/profile_step.py --precision bf16 --table
    make profile ARGS="--precision bf16"
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

from audioclip.models.fbsp import frame_signal, normalize_fbsp_grads_, num_frames
from audioclip.tasks import FinetuneModule
from audioclip.tasks.base import optimizer_group

# the paper's optimiser as the phase configs set it
SGD_GROUP = Path(__file__).resolve().parents[1] / "conf" / "optim" / "sgd.yaml"

def conv_and_linear_flops(module: torch.nn.Module, forward) -> int:
    """Multiply-add FLOPs (2 per multiply-add) of `module`'s convolutions and linear layers in one call of
    `forward()`, read from the shapes they see (a grouped convolution's output channel sees in_channels / groups
    inputs); the call runs without gradients and in eval mode, so BatchNorm's running statistics stay as they were."""
    total = 0

    def count(layer, args, out) -> None:
        nonlocal total
        if isinstance(layer, torch.nn.Conv2d):
            kh, kw = layer.kernel_size
            total += 2 * out.numel() * (layer.in_channels // layer.groups) * kh * kw
        else:
            total += 2 * out.numel() * layer.in_features

    layers = [m for m in module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    hooks = [layer.register_forward_hook(count) for layer in layers]
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        with torch.no_grad():
            forward()
    finally:
        for hook in hooks:
            hook.remove()
        for m, training in modes.items():
            m.training = training
    return total


def gemm_peak_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 3) -> float:
    """This machine's matrix-product rate (GFLOP/s) in `dtype` at the current thread count: best of `repeats`."""
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=gen).to(dtype) for _ in range(2))
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def max_step_speedup(step_s: float, parts: dict[str, tuple[float, float, float]]) -> float:
    """The step's speed-up if each part (name -> (seconds it took, its GFLOP, the GFLOP/s peak it could run at))
    took only its GFLOP at the peak instead of the seconds it took; the rest of the step unchanged."""
    bound = step_s - sum(seconds - gflop / peak for seconds, gflop, peak in parts.values())
    return step_s / bound


def roofline(head, audio: torch.Tensor, bf16: bool, stages: dict[str, float], step_s: float, conv_s: float) -> dict:
    """The step's matrix work and the bound on its speed-up at this machine's measured peak (see the docstring)."""
    cfg = head.config
    batch, channels, samples = audio.shape
    frames = num_frames(samples, cfg.win_length, cfg.hop_length)
    bins = cfg.n_fft // 2 + 1
    spec = torch.zeros(batch, cfg.bands, bins // cfg.bands, frames)
    features = conv_and_linear_flops(head, lambda: head.features(spec)) * channels
    body_fwd = features + 2 * batch * head.fc.in_features * head.fc.out_features
    body_gflop = 3 * body_fwd / 1e9  # forward, input gradient, weight gradient (the spectrogram is trained through)
    projection_gflop = 2 * (2 * 2 * batch * channels * frames * cfg.n_fft * bins) / 1e9  # forward + banks' gradient
    peak = {"bf16": round(gemm_peak_gflops(torch.bfloat16), 1), "fp32": round(gemm_peak_gflops(torch.float32), 1)}
    body_peak = peak["bf16" if bf16 else "fp32"]
    body_s = stages["body_fwd"] + stages["body_bwd"]
    projection_s = stages["fbsp_projection_fwd"] + stages["fbsp_projection_bwd"]
    parts = {"body": (body_s, body_gflop, body_peak), "projection": (projection_s, projection_gflop, peak["fp32"])}
    return {
        "gemm_peak_gflop_per_s": peak,
        "body_gflop": _significant(body_gflop),
        "body_gflop_per_s": round(body_gflop / body_s, 1),
        "body_fraction_of_peak": round(body_gflop / body_s / body_peak, 3),
        "conv_self_s": round(conv_s, 3),
        "conv_gflop_per_s": round(body_gflop / conv_s, 1),
        "body_outside_conv_s": round(max(body_s - conv_s, 0.0), 3),
        "projection_gflop": _significant(projection_gflop),
        "projection_gflop_per_s": round(projection_gflop / projection_s, 1),
        "max_step_speedup": round(max_step_speedup(step_s, parts), 3),
    }


def _significant(value: float, digits: int = 6) -> float:
    return float(f"{value:.{digits}g}")


def _setup(bf16: bool, batch_size: int, seconds: float, model: str = "audioclip"):
    torch.manual_seed(0)
    module = FinetuneModule(model=model, num_classes=50, **optimizer_group(SGD_GROUP, lr=5e-5)).train()
    if bf16:
        module.model.audio.to(memory_format=torch.channels_last)
    net = module.clip_model
    with torch.no_grad():
        text = net.encode_text(net.tokenize([f"class {i}" for i in range(50)]))
    class_text = text / text.norm(dim=-1, keepdim=True)
    gen = torch.Generator().manual_seed(0)
    audio = torch.randn(batch_size, 1, int(44_100 * seconds), generator=gen) * 3000
    target = torch.randint(0, 50, (batch_size,), generator=gen)
    return module, net, class_text, audio, target


def staged_step(net, class_text, audio, target, bf16: bool, times: dict[str, float]) -> None:
    """One step, stage by stage, adding each stage's forward and backward seconds to `times`."""
    head = net.audio
    cfg = head.config
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def clock(name: str, fn):
        start = time.perf_counter()
        out = fn()
        times[name] += time.perf_counter() - start
        return out

    batch, channels, _ = audio.shape
    with torch.no_grad():  # the input scaling and framing: no parameters, no gradient
        x = (((audio + 32768.0) * 2.0) / 65535.0) - 1.0
        frames = frame_signal(x.reshape(batch * channels, -1), cfg.win_length, cfg.hop_length) * head.window
        left = (cfg.n_fft - cfg.win_length) // 2
        frames = F.pad(frames, [left, cfg.n_fft - cfg.win_length - left])
    # forward, stage by stage, each stage's input cut from the graph
    weights = clock("fbsp_weights_fwd", lambda: head.fbsp.weights(cfg.n_fft))
    w_in = weights.detach().requires_grad_()

    def project():
        real, imag = F.linear(frames, w_in[..., 0]), F.linear(frames, w_in[..., 1])
        return (real**2 + imag**2).transpose(-1, -2)

    power = clock("fbsp_projection_fwd", project)
    p_in = power.detach().requires_grad_()

    def to_db():
        rows = p_in.shape[-2] // cfg.bands
        p = p_in[:, : rows * cfg.bands].reshape(batch, channels, cfg.bands, rows, p_in.shape[-1])
        p = torch.where(p > 0.0, p, torch.full_like(p, 1e-18))
        return torch.log10(p).mul(10.0)

    spec = clock("power_to_db_fwd", to_db)
    s_in = spec.detach().requires_grad_()

    def body():
        with autocast:
            return head.fc(sum(head.features(s_in[:, ch]) for ch in range(channels)))

    emb = clock("body_fwd", body)
    e_in = emb.detach().requires_grad_()

    def loss_fwd():
        with autocast:
            e = e_in / e_in.norm(dim=-1, keepdim=True)
            return net.loss({"audio": e, "text": class_text[target]})  # includes the TTF loss (its own weights)

    loss = clock("loss_fwd", loss_fwd)
    # backward, last stage first, each handing its input's gradient to the stage before
    clock("loss_bwd", lambda: loss.backward())
    clock("body_bwd", lambda: emb.backward(e_in.grad))
    clock("power_to_db_bwd", lambda: spec.backward(s_in.grad))
    clock("fbsp_projection_bwd", lambda: power.backward(p_in.grad))
    clock("fbsp_weights_bwd", lambda: weights.backward(w_in.grad))


def profile(precision: str, batch_size: int, seconds: float, steps: int, table: bool, model: str = "audioclip") -> dict:
    bf16 = precision == "bf16"
    module, net, class_text, audio, target = _setup(bf16, batch_size, seconds, model)
    optimizer = module.configure_optimizers()["optimizer"]

    def optimizer_step() -> None:
        normalize_fbsp_grads_(net)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    warm: dict[str, float] = defaultdict(float)
    staged_step(net, class_text, audio, target, bf16, warm)  # oneDNN builds its primitives on first use
    optimizer_step()
    times: dict[str, float] = defaultdict(float)
    start = time.perf_counter()
    for _ in range(steps):
        staged_step(net, class_text, audio, target, bf16, times)
        optimizer_step()
    total = (time.perf_counter() - start) / steps
    stages = {name: round(value / steps, 3) for name, value in times.items()}
    stages["optimizer_and_rest"] = round(total - sum(stages.values()), 3)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        staged_step(net, class_text, audio, target, bf16, defaultdict(float))
        optimizer_step()
    averages = prof.key_averages()
    if table:
        print(averages.table(sort_by="self_cpu_time_total", row_limit=25), file=sys.stderr)
    top = sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    conv_s = sum(e.self_cpu_time_total for e in averages if e.key in CONVOLUTION_OPS) / 1e6
    return {
        "model": model,
        "precision": precision + ("-mixed + channels_last" if bf16 else ""),
        "batch_size": batch_size,
        "clip_seconds": seconds,
        "threads": torch.get_num_threads(),
        "step_s": round(total, 3),
        "stages_s": stages,
        "stages_share": {name: round(value / total, 3) for name, value in stages.items()},
        "top_ops_self_s": {e.key: round(e.self_cpu_time_total / 1e6, 3) for e in top},
        "roofline": roofline(net.audio, audio, bf16, {k: v / steps for k, v in times.items()}, total, conv_s),
    }


# the profiler's names of the body's convolution kernels (oneDNN on CPU), forward and backward
# (one thread in fp32 takes ATen's own kernels for 1x1 convolutions)
CONVOLUTION_OPS = {
    "aten::mkldnn_convolution",
    "aten::convolution_backward",
    "aten::cudnn_convolution",
    "aten::_slow_conv2d_forward",
    "aten::_slow_conv2d_backward",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--steps", type=int, default=1, help="timed staged steps after one warm-up step")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="audioclip", help="audioclip (paper size) or audioclip-tiny (a smoke run)")
    parser.add_argument("--table", action="store_true", help="the profiler's operator table on stderr")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for precision in args.precision:
        result = profile(precision, args.batch_size, args.seconds, args.steps, args.table, args.model)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
