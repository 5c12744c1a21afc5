"""The fbsp front end of ESResNeXt-fbsp: a learnable frequency B-spline wavelet filter bank.

References:
- Guzhov et al., "ESResNe(X)t-fbsp: Learning Robust Time-Frequency Transformation of Audio", IJCNN 2021,
  section III-A (the complex-valued filter bank `LinearFBSP`, the time-frequency transformation loss).
- Guzhov et al., "AudioCLIP", 2021, section 3.2 (the audio head).

The numerics follow the reference implementation so that its released checkpoints load and give the same
outputs: the frames are taken with the reference's framing (central zero padding of the signal), windowed with a
periodic Blackman-Harris window, zero-padded centrally to `n_fft`, and projected onto the filter bank.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Blackman-Harris coefficients (minimum 4-term, Harris 1978), as scipy.signal.windows.blackmanharris.
_BLACKMAN_HARRIS = (0.35875, 0.48829, 0.14128, 0.01168)


def blackman_harris_window(length: int, periodic: bool = True) -> torch.Tensor:
    """The Blackman-Harris window, computed in float64 like `scipy.signal.get_window('blackmanharris', N)`.

    `periodic=True` is scipy's `fftbins=True`: a symmetric window of `length + 1` points without its last one.
    """
    n_sym = length + 1 if periodic else length
    if n_sym == 1:
        return torch.ones(1, dtype=torch.float64)
    phase = 2.0 * np.pi * np.arange(n_sym, dtype=np.float64) / (n_sym - 1)
    a0, a1, a2, a3 = _BLACKMAN_HARRIS
    window = a0 - a1 * np.cos(phase) + a2 * np.cos(2 * phase) - a3 * np.cos(3 * phase)
    return torch.from_numpy(window[:length].copy())


@contextlib.contextmanager
def ieee_fp32_matmul(device: torch.device) -> Iterator[None]:
    """fp32 matmuls in full IEEE precision inside the block on CUDA, whatever `set_float32_matmul_precision` chose
    for the rest of the model: the filter-bank projection cancels large terms and TF32's 10-bit mantissa shows."""
    if device.type != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul
    previous = matmul.fp32_precision
    matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        matmul.fp32_precision = previous


def num_frames(num_samples: int, frame_length: int, hop_length: int) -> int:
    """Number of frames the reference framing yields: `1 + ceil((T - win) / hop)`, at least one."""
    if num_samples <= frame_length:
        return 1
    return 1 + math.ceil((num_samples - frame_length) / hop_length)


def frame_signal(signal: torch.Tensor, frame_length: int, hop_length: int) -> torch.Tensor:
    """Cut (N, T) into (N, frames, frame_length) frames, zero-padding the signal half left, half right."""
    total = (num_frames(signal.shape[-1], frame_length, hop_length) - 1) * hop_length + frame_length
    missing = total - signal.shape[-1]
    if missing > 0:
        signal = F.pad(signal, [missing // 2, missing - missing // 2])
    return signal.unfold(-1, frame_length, hop_length)


class LinearFBSP(nn.Module):
    """Complex-valued linear layer whose weights are frequency B-spline wavelets (one per output frequency).

    Each output k has three learnable parameters: the spline order `m[k]`, the bandwidth `fb[k]` and the centre
    frequency `fc[k]`. The materialised weights have shape (out_features, in_features, 2) (real, imaginary):

        w_k(t) = sqrt(fb_k) * sinc(fb_k t / m_k) ** m_k * exp(-i fc_k t),   t in pi * linspace(-1, 1, in_features)

    (`sinc(x) ** m` taken as a complex power, so negative lobes keep their phase). With `normalized=True` the
    weights are divided by sqrt(in_features). Gradients of m, fb and fc are divided by their infinity norm, as the
    reference does, which keeps the filter bank's learning rate independent of the body's (`normalize_grad_`,
    called before each optimizer step; `normalize_fbsp_grads_` applies it to every filter bank of a model).
    """

    eps = 1e-8

    def __init__(self, out_features: int, normalized: bool = False):
        super().__init__()
        self.out_features = out_features
        self.normalized = normalized
        self.m = nn.Parameter(torch.zeros(out_features))
        self.fb = nn.Parameter(torch.ones(out_features))
        self.fc = nn.Parameter(torch.arange(out_features, dtype=torch.get_default_dtype()))
        # The reference model has an (unused, empty) bias parameter; it is kept so its checkpoints load strictly,
        # without gradient so that DDP does not wait for a gradient that never comes.
        self.bias = nn.Parameter(torch.empty(0), requires_grad=False)

    @torch.no_grad()
    def normalize_grad_(self) -> None:
        """Divide the gradients of m, fb and fc by their infinity norm, in place (the reference's rule).

        Call it once per optimizer step, after the gradient is final: after DDP has averaged it over the ranks and
        after a GradScaler has unscaled it (Lightning: `on_before_optimizer_step`; the training phases do). The
        reference applies the rule in a backward hook, which in one fp32 process gives the same result; a hook
        would see each rank's local (and loss-scaled) gradient instead, and need a collective inside backward.
        """
        for param in (self.m, self.fb, self.fc):
            if param.grad is not None:
                param.grad.div_(param.grad.abs().max() + self.eps)

    def weights(self, in_features: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Materialise the filter bank as (out_features, in_features, 2) real/imaginary weights."""
        dtype = dtype or self.fb.dtype
        t = (
            math.pi * torch.linspace(-1.0, 1.0, in_features, dtype=dtype, device=self.fb.device).reshape(1, -1)
            + self.eps
        )
        m, fb, fc = (p.to(dtype).reshape(-1, 1) for p in (self.m, self.fb, self.fc))

        kernel_re, kernel_im = torch.cos(fc * t), -torch.sin(fc * t)
        sinc_arg = fb * t / (m + self.eps)
        win = torch.where(sinc_arg == 0, torch.ones_like(sinc_arg), torch.sin(sinc_arg) / sinc_arg)
        # complex power (win + 0i) ** (m + 0i) = |win| ** m * exp(i m arg(win)), in the reference's order of
        # operations so that trained checkpoints give the reference's filters to the last bit
        magnitude = (win**2) ** 0.5
        phase = torch.atan2(torch.zeros_like(win), win)
        scaled = (magnitude**2) ** (0.5 * m)
        win_re, win_im = scaled * torch.cos(m * phase), scaled * torch.sin(m * phase)
        scale = torch.sqrt(fb).unsqueeze(-1)
        weights = scale * torch.stack(
            (win_re * kernel_re - win_im * kernel_im, win_re * kernel_im + win_im * kernel_re), dim=-1
        )
        if self.normalized:
            weights = weights / (in_features**0.5)
        return weights

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Project real frames (..., in_features) to complex outputs (..., out_features, 2)."""
        weights = self.weights(frames.shape[-1], frames.dtype)
        out = F.linear(frames, torch.cat((weights[..., 0], weights[..., 1]), 0))
        return torch.stack(out.split(self.out_features, -1), -1)

    def extra_repr(self) -> str:
        return f"out_features={self.out_features}, normalized={self.normalized}"


def normalize_fbsp_grads_(model: nn.Module) -> None:
    """`LinearFBSP.normalize_grad_` for every filter bank in `model`: call it between backward and optimizer step."""
    for module in model.modules():
        if isinstance(module, LinearFBSP):
            module.normalize_grad_()
