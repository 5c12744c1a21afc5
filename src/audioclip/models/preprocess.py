"""The model's image preprocessing, beside the model as open_clip keeps `image_transform` with its models.

CLIP's own transform (Radford et al. 2021; the `clip` package's `_transform`): resize the short side to the
model's input resolution (bicubic), centre crop, RGB, then normalise with CLIP's per-channel mean and std. Every
image the project feeds AudioCLIP (AudioSet frames, image folders, `audioclip.embed_image`) goes through here; the
audio side of the input contract (44.1 kHz, int16 value range) is `audioclip.constants` and `audioclip.data.audio`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from clip.clip import _transform

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def image_transform(resolution: int = 224) -> Callable:
    """PIL image -> (3, resolution, resolution) float tensor, CLIP-normalised."""
    return _transform(resolution)


def unnormalize_image(pixels: torch.Tensor) -> torch.Tensor:
    """A CLIP-normalised (3, H, W) image back in [0, 1], as the model saw it (for showing it in W&B)."""
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    return (pixels * std + mean).clamp(0, 1)
