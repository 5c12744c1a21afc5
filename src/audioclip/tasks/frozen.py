"""CLIP's heads as frozen teachers: no gradients, and eval mode (BatchNorm statistics kept) whatever Lightning does
with `train()`. Used by partial training (image and text frozen) and fine-tuning (image and text frozen)."""

from __future__ import annotations

from torch import nn

from audioclip.models import AudioCLIP


def freeze(module: nn.Module) -> None:
    """No gradients and eval mode (BatchNorm statistics frozen); `FrozenCLIP.train` keeps it in eval mode."""
    for p in module.parameters():
        p.requires_grad_(False)
    module.eval()


class FrozenCLIP:
    """Mixin for a LightningModule: `freeze_clip` freezes CLIP's text (and image) heads and keeps them in eval mode."""

    frozen: tuple[nn.Module, ...] = ()

    def freeze_clip(self, model: AudioCLIP, include_image: bool = True) -> None:
        parts = [model.transformer, model.token_embedding, model.ln_final] + ([model.visual] if include_image else [])
        for part in parts:
            freeze(part)
        for name in ("positional_embedding", "text_projection", "logit_scale"):
            getattr(model, name).requires_grad_(False)
        self.frozen = tuple(parts)

    def train(self, mode: bool = True):
        super().train(mode)
        for part in self.frozen:
            part.eval()
        return self
