"""`make profile` (issue 12): the step's matrix work is counted from the layers' shapes (a grouped convolution does
1/groups of a dense one's work), and the bound on the step's speed-up at the measured peak follows from it."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "profile_step.py"
_spec = importlib.util.spec_from_file_location("profile_step", SCRIPT)
profile_step = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(profile_step)


def test_flops_of_a_grouped_convolution_and_a_linear_layer_are_counted_from_their_shapes() -> None:
    conv = torch.nn.Conv2d(128, 128, 3, padding=1, groups=32, bias=False)
    linear = torch.nn.Linear(7, 5)
    model = torch.nn.ModuleDict({"conv": conv, "linear": linear})
    x, y = torch.randn(1, 128, 10, 12), torch.randn(3, 7)
    flops = profile_step.conv_and_linear_flops(model, lambda: (conv(x), linear(y)))
    # by hand: 1*128*10*12 outputs, each 4 inputs x 3x3 taps; 3*5 outputs of 7 inputs; 2 FLOPs per multiply-add
    assert flops == 2 * 15_360 * 36 + 2 * 15 * 7 == 1_106_130
    assert conv.weight.grad is None and not conv._forward_hooks  # no gradient taken, hooks removed


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
    assert roof["max_step_speedup"] >= 1.0
