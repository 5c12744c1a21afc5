"""Does `torch.compile` pay for the paper-size bf16 fine-tuning step on this machine?

Times the step (audio head forward under bf16 autocast + channels-last, the audio-text loss with the TTF loss,
backward, the fbsp gradient rule, SGD) in eager mode, then with `ESResNeXtFBSP.features` (the per-channel ResNeXt
body, where inductor can fuse BatchNorm, ReLU, the attention masks and the residual adds) compiled, then eager again
(the machine's drift within the run). The compiled path's first step includes the compilation. One JSON line.

    python benchmarks/compile_body.py                 # paper size, batch 8, 2 timed steps per path (~2 min idle)
    python benchmarks/compile_body.py --model audioclip-tiny --batch-size 2 --seconds 1
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import torch

from audioclip.models.fbsp import normalize_fbsp_grads_

_spec = importlib.util.spec_from_file_location("profile_step", Path(__file__).with_name("profile_step.py"))
profile_step = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(profile_step)


def timed_steps(step, steps: int) -> tuple[float, float]:
    """(seconds of the first step, mean seconds of the next `steps`)."""
    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return first, (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="audioclip")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    module, net, class_text, audio, target = profile_step._setup(True, args.batch_size, args.seconds, args.model)
    optimizer = module.configure_optimizers()["optimizer"]
    head = net.audio

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            emb = head(audio)
            emb = emb / emb.norm(dim=-1, keepdim=True)
            loss = net.loss({"audio": emb, "text": class_text[target]})
        loss.backward()
        normalize_fbsp_grads_(net)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    eager_first, eager = timed_steps(step, args.steps)
    head.features = torch.compile(head.features)  # the instance attribute shadows the method for `forward`
    compiled_first, compiled = timed_steps(step, args.steps)
    del head.features
    _, eager_again = timed_steps(step, args.steps)
    print(
        json.dumps(
            {
                "benchmark": "compile-body",
                "model": args.model,
                "batch_size": args.batch_size,
                "clip_seconds": args.seconds,
                "threads": torch.get_num_threads(),
                "steps": args.steps,
                "eager_first_step_s": round(eager_first, 3),
                "eager_step_s": round(eager, 3),
                "compiled_first_step_s": round(compiled_first, 3),
                "compiled_step_s": round(compiled, 3),
                "eager_again_step_s": round(eager_again, 3),
                "compiled_speedup": round((eager + eager_again) / 2 / compiled, 3),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
