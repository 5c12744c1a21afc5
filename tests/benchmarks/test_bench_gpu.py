"""`make bench-gpu`: the GPU benchmark script runs end to end on CPU with the tiny models, and its JSON
line says whether the loader or the step is the slower one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_gpu.py"


def test_bench_gpu_runs_on_cpu_and_names_the_bound() -> None:
    args = ["--workers", "1", "--batch-size", "2", "--steps", "1", "--clips", "4", "--audioset-seconds", "1"]
    run = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["model"] == "audioclip-tiny" and result["batch_size"] == 2 and result["device"].startswith("cpu")
    for kind in ("finetune", "full"):
        for precision in ("fp32", "bf16"):
            assert result[f"{kind}_{precision}_samples_per_s"] > 0
            assert result[f"{kind}_{precision}_peak_mem_mb"] is None  # GPU memory: none on CPU
        ratio = result[f"{kind}_bf16_samples_per_s"] / result[f"{kind}_fp32_samples_per_s"]
        assert abs(result[f"{kind}_bf16_speedup"] - ratio) < 0.01
    assert result["loader_workers"] == 1 and result["loader_items_per_s"] > 0
    assert result["full_bf16_step_consumes_items_per_s"] == result["full_bf16_samples_per_s"]
    slower = "data" if result["loader_items_per_s"] < result["full_bf16_samples_per_s"] else "compute"
    assert result["bound"] == slower
