"""`precision: auto`: bf16-mixed where the hardware computes in bf16, else fp32: fast by default.

bf16 autocast pays where matrix units take bf16 natively: CUDA devices with bf16 support (Ampere and later), and
x86 CPUs with AMX (`amx_bf16`) or AVX512-BF16 (`avx512_bf16`), on which oneDNN runs bf16 convolutions and matmuls
(measured by `make bench-train`: about 3x the fp32 step on a 2-core AVX512-BF16 CPU). Elsewhere bf16 is emulated
and slower than fp32, so `auto` stays at `32-true`. The fbsp front end computes in fp32 under any autocast
(`ESResNeXtFBSP.spectrogram`), so the embeddings stay within 1e-2 of fp32. Mixed precision brings channels-last
convolution weights with it (`ChannelsLast`, `to_inference_precision`): oneDNN's and cuDNN's fast bf16 kernels
want that layout.

True-half precisions (16-true, bf16-true) cast the filter bank itself and are refused by the training CLI.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

AUTO = "auto"
# x86 CPU flags (as /proc/cpuinfo names them) of native bf16 arithmetic
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
INFERENCE_PRECISIONS = (AUTO, "32-true", "bf16-mixed")
CPUINFO = Path("/proc/cpuinfo")


def cpu_bf16() -> tuple[bool, str]:
    """Whether this CPU computes bf16 natively, and the evidence: /proc/cpuinfo's flags where there is one, else
    torch's detected CPU capability (which names AMX only on builds that report it)."""
    try:
        flags = {flag for line in CPUINFO.read_text().splitlines() if line.startswith("flags") for flag in line.split()}
    except OSError:
        flags = None
    if flags is not None:
        found = [flag for flag in BF16_CPU_FLAGS if flag in flags]
        if found:
            return True, f"the CPU has {' and '.join(found)}"
        return False, f"the CPU has neither {' nor '.join(BF16_CPU_FLAGS)} (bf16 would be emulated, slower than fp32)"
    capability = str(torch.backends.cpu.get_cpu_capability())
    if "AMX" in capability.upper():
        return True, f"torch reports CPU capability {capability}"
    return False, f"torch reports CPU capability {capability}, without AMX (no /proc/cpuinfo to read flags from)"


def cuda_bf16() -> tuple[bool, str]:
    """Whether the current CUDA device computes bf16 natively, and its name."""
    name = torch.cuda.get_device_name()
    if torch.cuda.is_bf16_supported(including_emulation=False):
        return True, f"the GPU ({name}) supports bf16"
    return False, f"the GPU ({name}) has no native bf16"


def uses_cuda(accelerator: Any) -> bool:
    """Whether a Trainer's `accelerator` setting (or an inference device) lands on CUDA."""
    name = str(getattr(accelerator, "type", accelerator) or AUTO).lower()
    if name in ("auto", "gpu") or name.startswith("cuda"):
        return torch.cuda.is_available()
    return False


def auto_precision(accelerator: Any = AUTO) -> tuple[str, str]:
    """(`bf16-mixed` or `32-true`, why) for the device `accelerator` names."""
    has_bf16, why = cuda_bf16() if uses_cuda(accelerator) else cpu_bf16()
    return ("bf16-mixed" if has_bf16 else "32-true"), why


def resolve_precision(precision: Any, accelerator: Any = AUTO) -> tuple[Any, str]:
    """`auto` (or None) -> the hardware's choice; any other setting is kept, said to be the user's."""
    if precision is None or str(precision) == AUTO:
        chosen, why = auto_precision(accelerator)
        return chosen, f"precision auto -> {chosen}: {why}"
    return precision, f"precision {precision}: as set"


def announce(line: str) -> None:
    """The choice, on stderr, as the run's first line (stdout stays the command's results)."""
    print(f"audioclip: {line}", file=sys.stderr, flush=True)


def is_mixed(precision: Any) -> bool:
    return str(precision) in ("bf16-mixed", "16-mixed", "bf16", "16")


def _autocast(method: Callable, device_type: str) -> Callable:
    @functools.wraps(method)
    def run(*args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.autocast(device_type, dtype=torch.bfloat16):
            return method(*args, **kwargs).float()

    return run


def check_inference_precision(precision: str) -> str:
    """A precision inference takes, or a one-line error naming the setting (before any weights are read)."""
    if precision not in INFERENCE_PRECISIONS:
        raise ValueError(f"--precision: one of {', '.join(INFERENCE_PRECISIONS)}, got {precision!r}")
    return precision


def to_inference_precision(model: torch.nn.Module, precision: str = AUTO) -> tuple[str, str]:
    """Put a loaded AudioCLIP in `precision` (`auto`, `32-true` or `bf16-mixed`) for inference: under bf16-mixed its
    `encode_audio/_image/_text` run under bf16 autocast (fp32 embeddings out) with channels-last convolutions.

    Returns (the precision used, the line saying why), also kept as `model.precision` and `model.precision_line`.
    The weights stay fp32, so a model's fingerprint is the same in every precision."""
    check_inference_precision(precision)
    device = next(model.parameters()).device
    chosen, line = resolve_precision(precision, device)
    model.precision, model.precision_line = chosen, line
    if chosen == "bf16-mixed":
        model.to(memory_format=torch.channels_last)
        for name in ("encode_audio", "encode_image", "encode_text"):
            setattr(model, name, _autocast(getattr(model, name), device.type))
    return chosen, line


def announce_on_first_use(model: torch.nn.Module) -> None:
    """Say `model.precision_line` when the model first embeds something: a command that stops at bad input before
    that prints its one error line and nothing else."""
    said = False

    def wrap(method: Callable) -> Callable:
        @functools.wraps(method)
        def run(*args: Any, **kwargs: Any) -> torch.Tensor:
            nonlocal said
            if not said:
                said = True
                announce(model.precision_line)
            return method(*args, **kwargs)

        return run

    for name in ("encode_audio", "encode_image", "encode_text"):
        setattr(model, name, wrap(getattr(model, name)))
