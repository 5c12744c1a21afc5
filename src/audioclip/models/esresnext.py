"""ESResNeXt-fbsp: the audio head of AudioCLIP, and a standalone audio classifier.

References:
- Guzhov et al., "ESResNe(X)t-fbsp", IJCNN 2021: the fbsp front end, the attention blocks (section III-B) and the
  per-channel body whose pooled features are summed.
- Xie et al., "Aggregated Residual Transformations" (ResNeXt-50 32x4d), in torchvision's layout so that ImageNet
  weights load into the body.

The state-dict layout is the reference implementation's (`window`, `fbsp.*`, `conv1`, `layer1..4`, `att1..5`,
`fc`), so `ESRNXFBSP.pt` and the audio part of the AudioCLIP checkpoints load with `strict=True`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from audioclip.models.fbsp import LinearFBSP, blackman_harris_window, frame_signal, ieee_fp32_matmul


@dataclass(frozen=True)
class AudioConfig:
    """Hyper-parameters of the ESResNeXt-fbsp audio head (defaults: the paper's)."""

    num_classes: int = 1024  # 1024: AudioCLIP's embedding; 527: the standalone AudioSet classifier
    n_fft: int = 2048  # filter bank input size; 1025 output frequencies
    hop_length: int = 561  # 44.1 kHz / 561 ~ 78.6 frames per second
    win_length: int = 1654  # ~37.5 ms analysis window, zero-padded centrally to n_fft
    normalized: bool = True  # filter bank weights divided by sqrt(n_fft); TTF target norm 1
    layers: tuple[int, int, int, int] = (3, 4, 6, 3)  # ResNeXt-50
    base_planes: int = 64  # stem width; stages use 1x, 2x, 4x, 8x this (x4 expansion at the block output)
    groups: int = 32  # ResNeXt cardinality
    width_per_group: int = 4  # "32x4d"
    attention: bool = True  # the att1..att5 blocks
    bands: int = 3  # frequency bands fed to the 3 input planes of the body


class Bottleneck(nn.Module):
    """ResNeXt bottleneck in torchvision's layout (conv1/bn1, grouped conv2/bn2, conv3/bn3, downsample)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, groups: int, base_width: int):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class Attention2d(nn.Module):
    """ESResNeXt attention: max-pool the block's input to the block's output size, then a depthwise and a
    pointwise convolution, BatchNorm and a sigmoid give a multiplicative mask for the block's output."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int]):
        super().__init__()
        padding = (kernel_size[0] // 2, kernel_size[1] // 2)
        self.conv_depth = nn.Conv2d(in_channels, in_channels, kernel_size, padding=padding, groups=in_channels)
        self.conv_point = nn.Conv2d(in_channels, out_channels, 1)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = F.adaptive_max_pool2d(x, size)
        return torch.sigmoid(self.bn(self.conv_point(self.conv_depth(x))))


# attention kernel shapes after the stem's block input and each stage (frequency x time), as in the paper
_ATTENTION_KERNELS = ((3, 1), (1, 5), (3, 1), (1, 5), (3, 5))


class ESResNeXtFBSP(nn.Module):
    """fbsp front end + ResNeXt body with attention, run on each audio channel separately, pooled features summed.

    Input: (B, C, T) float waveform at 44.1 kHz in the int16 value range. Output: (B, num_classes) — logits of the
    standalone classifier, or the (unnormalised) audio embedding inside AudioCLIP.
    """

    def __init__(self, config: AudioConfig | None = None, **overrides):
        super().__init__()
        cfg = replace(config or AudioConfig(), **overrides)
        self.config = cfg
        if cfg.win_length > cfg.n_fft:
            raise ValueError(f"win_length ({cfg.win_length}) must not exceed n_fft ({cfg.n_fft})")

        self.register_buffer("window", blackman_harris_window(cfg.win_length).to(torch.get_default_dtype()))

        # modules are registered in the reference's order, so state dicts list their keys in the same order
        base = cfg.base_planes
        self.conv1 = nn.Conv2d(cfg.bands, base, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = base
        for idx, blocks in enumerate(cfg.layers):
            planes = base * 2**idx
            stage_in = inplanes
            stage = [Bottleneck(inplanes, planes, 1 if idx == 0 else 2, cfg.groups, cfg.width_per_group)]
            inplanes = planes * Bottleneck.expansion
            stage += [Bottleneck(inplanes, planes, 1, cfg.groups, cfg.width_per_group) for _ in range(1, blocks)]
            setattr(self, f"layer{idx + 1}", nn.Sequential(*stage))
            if cfg.attention:
                setattr(self, f"att{idx + 1}", Attention2d(stage_in, inplanes, _ATTENTION_KERNELS[idx]))
        if cfg.attention:
            self.att5 = Attention2d(inplanes, inplanes, _ATTENTION_KERNELS[4])
        self.fc = nn.Linear(inplanes, cfg.num_classes)
        self.fbsp = LinearFBSP(cfg.n_fft // 2 + 1, normalized=cfg.normalized)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def feature_dim(self) -> int:
        return self.fc.in_features

    def spectrogram(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, C, T) int16-range waveform -> (B, C, bands, rows, frames) log-power spectrogram in dB.

        Low-power bins come out of a large cancellation in the filter-bank projection, so their dB values (and
        through them the embedding) are sensitive to float rounding: the operations keep the reference's order
        (window, central zero padding to n_fft, one projection per real/imaginary part) to reproduce its fp32
        results, and the front end runs in IEEE fp32 (or float64) even under autocast, in a module cast to half
        precision, and with TF32 matmuls enabled elsewhere (TF32 loses up to 5 dB on low-power bins).
        """
        cfg = self.config
        batch, channels, _ = audio.shape
        # fp32 at least, whatever the module was cast to: in fp16 `(x + 32768) * 2` overflows and a bf16 filter
        # bank is off by up to 100 dB on low-power bins; float64 stays float64 (the strict parity check)
        dtype = torch.float64 if self.window.dtype == torch.float64 else torch.float32
        with torch.autocast(audio.device.type, enabled=False), ieee_fp32_matmul(audio.device):
            x = audio.to(dtype)
            x = (((x + 32768.0) * 2.0) / 65535.0) - 1.0  # the reference's int16 -> [-1, 1] scaling
            with torch.no_grad():
                window = self.window.to(dtype)
                frames = frame_signal(x.reshape(batch * channels, -1), cfg.win_length, cfg.hop_length) * window
                left = (cfg.n_fft - cfg.win_length) // 2
                frames = F.pad(frames, [left, cfg.n_fft - cfg.win_length - left])
            weights = self._filter_bank(dtype, keep=True)
            real, imag = F.linear(frames, weights[..., 0]), F.linear(frames, weights[..., 1])
            power = (real**2 + imag**2).transpose(-1, -2)  # (B*C, freq, frames)

            rows = power.shape[-2] // cfg.bands
            power = power[:, : rows * cfg.bands].reshape(batch, channels, cfg.bands, rows, power.shape[-1])
            power = torch.where(power > 0.0, power, torch.full_like(power, 1e-18))
            return torch.log10(power).mul(10.0)

    # the spectrogram keeps the filter bank it built for `ttf_loss` of the same step (one build per step, not two);
    # False: build it twice
    reuse_filter_bank: bool = True

    def _filter_bank(self, dtype: torch.dtype, keep: bool = False) -> torch.Tensor:
        """The filter bank materialised (`LinearFBSP.weights`), or the one the spectrogram kept: one build and one
        backward through it per training step instead of two, the same values. The kept bank is taken at most once,
        only with gradients on and while m, fb and fc are unchanged (the optimizer's in-place step bumps their
        version), so a stale bank is never used; back-propagating the embeddings before calling `ttf_loss` would
        reuse a freed graph: set `reuse_filter_bank = False` for such a use."""
        versions = (dtype, *(p._version for p in (self.fbsp.m, self.fbsp.fb, self.fbsp.fc)))
        kept, self._kept_bank = self.__dict__.get("_kept_bank"), None
        if not keep and kept is not None and kept[0] == versions and torch.is_grad_enabled():
            return kept[1]
        bank = self.fbsp.weights(self.config.n_fft, dtype)
        if keep and self.reuse_filter_bank and torch.is_grad_enabled() and bank.requires_grad:
            self._kept_bank = (versions, bank)
        return bank

    def ttf_loss(self) -> torch.Tensor:
        """Time-frequency transformation loss: MSE between each filter's L2 norm and its target norm
        (1 when normalized, sqrt(n_fft) otherwise), keeping the learned filter bank energy-preserving."""
        norms = torch.linalg.vector_norm(self._filter_bank(self.fbsp.fb.dtype), ord=2, dim=(-2, -1))
        target = 1.0 if self.config.normalized else self.config.n_fft**0.5
        return F.mse_loss(norms, torch.full_like(norms, target))

    def _stage(self, idx: int, x: torch.Tensor) -> torch.Tensor:
        out = getattr(self, f"layer{idx}")(x)
        if self.config.attention:
            out = out * getattr(self, f"att{idx}")(x, out.shape[-2:])
        return out

    def features(self, spec: torch.Tensor) -> torch.Tensor:
        """One channel's (B, bands, rows, frames) spectrogram -> (B, feature_dim) pooled features."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(spec))))
        for idx in range(1, 5):
            x = self._stage(idx, x)
        pooled = F.adaptive_avg_pool2d(x, 1)
        if self.config.attention:
            pooled = pooled * self.att5(x, pooled.shape[-2:])
        return torch.flatten(pooled, 1)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.dim() != 3:
            raise ValueError(f"audio must be (batch, channels, samples), got shape {tuple(audio.shape)}")
        spec = self.spectrogram(audio)
        spec = spec.to(self.conv1.weight.dtype)
        pooled = sum(self.features(spec[:, ch]) for ch in range(spec.shape[1]))
        return self.fc(pooled)
