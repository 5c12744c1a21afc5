"""Plain `nn.Module`s (no Lightning inside), the model registry and weight loading."""

from audioclip.models.audioclip import AudioCLIP, AudioCLIPConfig
from audioclip.models.esresnext import AudioConfig, ESResNeXtFBSP
from audioclip.models.fbsp import LinearFBSP
from audioclip.models.pretrained import TAGS, Weights, WeightsError, load_weights, read_weights
from audioclip.models.registry import (
    AUDIO_HEAD,
    AUDIOCLIP,
    ModelSpec,
    create_model,
    get_config,
    get_spec,
    list_models,
    list_pretrained,
)

__all__ = [
    "AUDIOCLIP",
    "AUDIO_HEAD",
    "TAGS",
    "AudioCLIP",
    "AudioCLIPConfig",
    "AudioConfig",
    "ESResNeXtFBSP",
    "LinearFBSP",
    "ModelSpec",
    "Weights",
    "WeightsError",
    "create_model",
    "get_config",
    "get_spec",
    "list_models",
    "list_pretrained",
    "load_weights",
    "read_weights",
]
