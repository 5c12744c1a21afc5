"""Encoder registry (open_clip style): model names -> configurations, and `create_model`.

`audioclip` and `esresnext-fbsp` are the paper's sizes; the `-tiny` variants keep every code path (fbsp front end,
attention blocks, CLIP heads) at a size where a training step takes well under a second on a laptop CPU, for
tests and demos.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from audioclip.constants import AUDIOSET_CLASSES
from audioclip.models.audioclip import AudioCLIP, AudioCLIPConfig
from audioclip.models.esresnext import AudioConfig, ESResNeXtFBSP
from audioclip.models.pretrained import WeightsError

_TINY_AUDIO = AudioConfig(
    n_fft=512,  # 257 frequencies -> 3 bands of 85 rows
    hop_length=441,  # 100 frames per second
    win_length=400,
    layers=(1, 1, 1, 1),
    base_planes=8,  # stage outputs 32, 64, 128, 256
    groups=4,
    width_per_group=16,  # grouped convs of width 8, 16, 32, 64
)

_TINY_CLIP = AudioCLIPConfig(
    embed_dim=64,
    vision_layers=(1, 1, 1, 1),
    vision_width=8,  # attention pool of 256 channels, 4 heads
    transformer_width=32,
    transformer_heads=2,
    transformer_layers=2,
    audio=_TINY_AUDIO,
)

MODELS: dict[str, AudioCLIPConfig | AudioConfig] = {
    "audioclip": AudioCLIPConfig(),
    "audioclip-tiny": _TINY_CLIP,
    "esresnext-fbsp": AudioConfig(num_classes=AUDIOSET_CLASSES),
    "esresnext-fbsp-tiny": replace(_TINY_AUDIO, num_classes=AUDIOSET_CLASSES),
}


def list_models() -> list[str]:
    return sorted(MODELS)


def get_config(name: str) -> AudioCLIPConfig | AudioConfig:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return MODELS[name]


def create_model(name: str, pretrained: str | Path | None = None, strict: bool = True, **overrides) -> nn.Module:
    """Build a registered model, optionally loading weights from an official tag or a file path.

    `overrides` replace fields of the configuration (e.g. `num_classes=50` for a standalone ESC-50 classifier).
    """
    config = get_config(name)
    model = (
        AudioCLIP(config, **overrides) if isinstance(config, AudioCLIPConfig) else ESResNeXtFBSP(config, **overrides)
    )
    model.model_name = name
    if pretrained is not None:
        from audioclip.models.pretrained import load_pretrained

        load_pretrained(model, pretrained, strict=strict)
    return model


def guess_model_name(state: Mapping[str, torch.Tensor]) -> str:
    """The registered AudioCLIP whose state-dict layout the weights have (`audioclip.load` of a file without a
    model name)."""
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    for name, config in MODELS.items():
        if not isinstance(config, AudioCLIPConfig):
            continue
        with torch.device("meta"):
            layout = {k: tuple(v.shape) for k, v in AudioCLIP(config).state_dict().items()}
        if layout == shapes:
            return name
    raise WeightsError("the weights match no registered AudioCLIP model (audioclip, audioclip-tiny)")
