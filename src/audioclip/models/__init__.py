"""Plain `nn.Module`s (no Lightning inside) and the encoder registry."""

from audioclip.models.audioclip import AudioCLIP, AudioCLIPConfig
from audioclip.models.esresnext import AudioConfig, ESResNeXtFBSP
from audioclip.models.fbsp import LinearFBSP
from audioclip.models.pretrained import TAGS, WeightsError, load_pretrained
from audioclip.models.registry import create_model, get_config, list_models

__all__ = [
    "TAGS",
    "AudioCLIP",
    "AudioCLIPConfig",
    "AudioConfig",
    "ESResNeXtFBSP",
    "LinearFBSP",
    "WeightsError",
    "create_model",
    "get_config",
    "list_models",
    "load_pretrained",
]
