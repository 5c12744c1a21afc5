"""`make profile`: the step's matrix work is counted from the layers' shapes (a grouped convolution does
1/groups of a dense one's work), and the bound on the step's speed-up at the measured peak follows from it."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "profile_step.py"
_spec = importlib.util.spec_from_file_location("profile_step", SCRIPT)
profile_step = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(profile_step)


def test_flops_of_a_grouped_convolution_and_a_linear_layer_are_counted_from_their_shapes() -> None:
    conv = torch.nn.Conv2d(128, 128, 3, padding=1, groups=32, bias=False)
    bn = torch.nn.BatchNorm2d(128)
    linear = torch.nn.Linear(7, 5)
    model = torch.nn.ModuleDict({"conv": conv, "bn": bn, "linear": linear}).train()
    x, y = torch.randn(1, 128, 10, 12), torch.randn(3, 7)
    flops = profile_step.conv_and_linear_flops(model, lambda: (bn(conv(x)), linear(y)))
    # by hand: 1*128*10*12 outputs, each 4 inputs x 3x3 taps; 3*5 outputs of 7 inputs; 2 FLOPs per multiply-add
    assert flops == 2 * 15_360 * 36 + 2 * 15 * 7 == 1_106_130
    assert not conv._forward_hooks and not linear._forward_hooks  # hooks removed
    # counting must not train the model being profiled: BatchNorm's statistics untouched, train mode restored
    assert torch.equal(bn.running_mean, torch.zeros(128)) and bn.num_batches_tracked == 0 and bn.training


class _TinyHead(torch.nn.Module):
    """A stand-in audio head: the front-end settings `roofline` reads, one convolution as the body, and `fc`."""

    config = SimpleNamespace(n_fft=16, win_length=16, hop_length=8, bands=3)

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.fc = torch.nn.Linear(4, 5)

    def features(self, spec: torch.Tensor) -> torch.Tensor:
        return self.conv(spec).mean(dim=(-2, -1))


def test_the_roofline_counts_every_channel_both_gradients_and_fc_and_prices_the_body_at_its_precision() -> None:
    audio = torch.zeros(2, 2, 64)  # 2 clips, 2 channels: 1 + ceil((64 - 16) / 8) = 7 frames of 16 samples, 9 bins
    stages = {"body_fwd": 0.4, "body_bwd": 0.6, "fbsp_projection_fwd": 0.2, "fbsp_projection_bwd": 0.3}
    roof = profile_step.roofline(_TinyHead(), audio, True, stages, step_s=2.0, conv_s=0.75)
    # by hand: per channel the (2, 3 bands, 3 rows, 7 frames) spectrogram gives 2*4*3*7 = 168 outputs of 3 x 3x3
    # inputs; fc: 2*5 outputs of 4 inputs; forward + input gradient + weight gradient = 3x; 2 FLOPs per mul-add
    body = 3 * (2 * (2 * 168 * 27) + 2 * 10 * 4)
    assert roof["body_gflop"] == pytest.approx(body / 1e9, rel=1e-5) and body == 54_672
    # the projection: (2 clips x 2 channels x 7 frames) x 16 samples onto 9 bins, real + imaginary, fwd + gradient
    assert roof["projection_gflop"] == pytest.approx(8 * 28 * 16 * 9 / 1e9, rel=1e-5)
    assert roof["body_outside_conv_s"] == pytest.approx(0.25) and roof["conv_self_s"] == 0.75
    # so little work that at peak the body and the projection take ~0 s: the 2-s step would take 0.5 s
    assert roof["max_step_speedup"] == pytest.approx(4.0, rel=1e-3)
    # a bf16 body is priced at the bf16 rate, an fp32 one at the fp32 rate (a body as fast as ~half the peak)
    for bf16, precision in ((True, "bf16"), (False, "fp32")):
        fast = {**stages, "body_fwd": 0.5e-7, "body_bwd": 0.5e-7}
        roof = profile_step.roofline(_TinyHead(), audio, bf16, fast, step_s=2.0, conv_s=1e-7)
        expected = body / 1e9 / 1e-7 / roof["gemm_peak_gflop_per_s"][precision]
        assert roof["body_fraction_of_peak"] == pytest.approx(expected, rel=2e-2)


def test_the_bound_replaces_each_part_by_its_work_at_peak() -> None:
    # a 10 s step whose 6 s part does 100 GFLOP on a 50 GFLOP/s machine: at peak it takes 2 s, the step 6 s
    assert profile_step.max_step_speedup(10.0, {"body": (6.0, 100.0, 50.0)}) == pytest.approx(10 / 6)
    parts = {"body": (6.0, 100.0, 50.0), "projection": (2.0, 10.0, 10.0)}
    assert profile_step.max_step_speedup(10.0, parts) == pytest.approx(10 / 5)


def test_make_profile_runs_the_tiny_model_and_reports_its_roofline() -> None:
    args = ["--model", "audioclip-tiny", "--precision", "bf16", "--batch-size", "2", "--seconds", "1"]
    run = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["model"] == "audioclip-tiny" and result["precision"] == "bf16-mixed + channels_last"
    roof = result["roofline"]
    assert roof["gemm_peak_gflop_per_s"]["bf16"] > 0 and roof["gemm_peak_gflop_per_s"]["fp32"] > 0
    # tiny front end: 2 clips of 1 s = 2 x 101 frames (hop 441, window 400) of n_fft 512 onto 257 bins, real and
    # imaginary, forward and the banks' gradient: 4 products of 2 FLOPs per multiply-add
    assert roof["projection_gflop"] == pytest.approx(4 * 2 * (2 * 101) * 512 * 257 / 1e9, abs=1e-3)
    assert 0 < roof["body_gflop"] < 1
    assert roof["max_step_speedup"] > 1.0
