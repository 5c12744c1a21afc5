"""AudioCLIP in PyTorch Lightning: the tri-modal model, its training phases, and inference helpers."""

from audioclip.inference import classify, embed_audio, embed_image, embed_text, load
from audioclip.models import create_model, list_models

__all__ = ["classify", "create_model", "embed_audio", "embed_image", "embed_text", "list_models", "load"]
__version__ = "0.1.0"
