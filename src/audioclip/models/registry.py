"""Model registry (open_clip / timm style): every model name -> its builder, configuration and the official weight
tags that load into it; `create_model`, `list_models(pattern)`, `list_pretrained()`.

`audioclip` and `esresnext-fbsp` are the paper's sizes; the `-tiny` variants keep every code path (fbsp front end,
attention blocks, CLIP heads) at a size where a training step takes well under a second on a laptop CPU, for
tests and demos.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from audioclip.constants import AUDIOSET_CLASSES
from audioclip.models.audioclip import AudioCLIP, AudioCLIPConfig
from audioclip.models.esresnext import AudioConfig, ESResNeXtFBSP
from audioclip.models.pretrained import WeightsError

AUDIOCLIP = "audioclip"  # image + text (CLIP RN50) + audio heads in one embedding space
AUDIO_HEAD = "audio-head"  # the standalone ESResNeXt-fbsp classifier


@dataclass(frozen=True)
class ModelSpec:
    """One registered model: what it is, how it is built, which official weights load into it."""

    name: str
    family: str  # AUDIOCLIP or AUDIO_HEAD
    config: AudioCLIPConfig | AudioConfig
    build: Callable[..., nn.Module]  # build(config, **overrides)
    pretrained: tuple[str, ...] = ()  # official weight tags (models.pretrained.TAGS) that load into it


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

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        # `clip-rn50` loads CLIP's image and text heads only; the audio head keeps its initialisation
        ModelSpec("audioclip", AUDIOCLIP, AudioCLIPConfig(), AudioCLIP, ("full", "partial", "clip-rn50")),
        ModelSpec("audioclip-tiny", AUDIOCLIP, _TINY_CLIP, AudioCLIP),
        ModelSpec(
            "esresnext-fbsp", AUDIO_HEAD, AudioConfig(num_classes=AUDIOSET_CLASSES), ESResNeXtFBSP, ("esrnxfbsp",)
        ),
        ModelSpec("esresnext-fbsp-tiny", AUDIO_HEAD, replace(_TINY_AUDIO, num_classes=AUDIOSET_CLASSES), ESResNeXtFBSP),
    )
}


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style `pattern` (e.g. `*-tiny`), sorted."""
    return sorted(name for name in MODELS if fnmatch.fnmatchcase(name, pattern))


def list_pretrained() -> list[tuple[str, str]]:
    """(model name, official weight tag) for every tag that loads into a registered model."""
    return [(name, tag) for name in list_models() for tag in MODELS[name].pretrained]


def get_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return MODELS[name]


def get_config(name: str) -> AudioCLIPConfig | AudioConfig:
    return get_spec(name).config


def create_model(name: str, pretrained: str | Path | None = None, strict: bool = True, **overrides) -> nn.Module:
    """Build a registered model, optionally loading weights from an official tag or a file path.

    `overrides` replace fields of the configuration (e.g. `num_classes=50` for a standalone ESC-50 classifier).
    """
    spec = get_spec(name)
    model = spec.build(spec.config, **overrides)
    model.model_name = name
    if pretrained is not None:
        from audioclip.models.pretrained import load_weights

        load_weights(model, pretrained, strict=strict)
    return model


def guess_model_name(state: Mapping[str, torch.Tensor]) -> str:
    """The registered AudioCLIP whose state-dict layout the weights have (`audioclip.load` of a file without a
    model name)."""
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    candidates = [spec for spec in MODELS.values() if spec.family == AUDIOCLIP]
    for spec in candidates:
        with torch.device("meta"):
            layout = {k: tuple(v.shape) for k, v in spec.build(spec.config).state_dict().items()}
        if layout == shapes:
            return spec.name
    names = ", ".join(spec.name for spec in candidates)
    raise WeightsError(f"the weights match no registered AudioCLIP model ({names})")
