"""AudioCLIP: CLIP's image and text heads plus an ESResNeXt-fbsp audio head in one 1024-d embedding space.

Reference: Guzhov et al., "AudioCLIP: Extending CLIP to Image, Text and Audio", ICASSP 2022 (arXiv 2106.13043),
sections 3.1-3.3. Built on `clip.model.CLIP` from OpenAI's `clip` package (ModifiedResNet RN50 image head,
12-layer text transformer), so CLIP's `RN50.pt` and the AudioCLIP checkpoints load with `strict=True`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import clip
import torch
from clip.model import CLIP
from torch import nn

from audioclip.models.esresnext import AudioConfig, ESResNeXtFBSP
from audioclip.models.losses import PAIRS, clamp_scale, contrastive_loss


@dataclass(frozen=True)
class AudioCLIPConfig:
    """Hyper-parameters of AudioCLIP (defaults: the paper's, i.e. CLIP RN50 + ESResNeXt-fbsp)."""

    embed_dim: int = 1024  # shared embedding size of the three heads
    image_resolution: int = 224  # CLIP's input size
    vision_layers: tuple[int, int, int, int] = (3, 4, 6, 3)  # ModifiedResNet-50
    vision_width: int = 64  # ModifiedResNet stem width
    context_length: int = 77  # CLIP tokenizer context
    vocab_size: int = 49408  # CLIP BPE vocabulary
    transformer_width: int = 512
    transformer_heads: int = 8
    transformer_layers: int = 12
    audio: AudioConfig = field(default_factory=AudioConfig)  # its num_classes is forced to embed_dim


# the attributes each modality's encoder is made of (`drop_towers`, `audioclip.load(..., towers=)`); the three logit
# scales are shared and always kept
TOWERS: dict[str, tuple[str, ...]] = {
    "audio": ("audio",),
    "image": ("visual",),
    "text": ("transformer", "token_embedding", "ln_final", "positional_embedding", "text_projection"),
}


class AudioCLIP(CLIP):
    """The tri-modal model. `AudioCLIP()` is the paper's configuration with CLIP's random initialisation.

    - `encode_audio(audio)`: (B, C, T) float waveform at 44.1 kHz in the int16 value range -> (B, embed_dim)
    - `encode_image(image)`: CLIP-preprocessed (B, 3, 224, 224) -> (B, embed_dim)
    - `encode_text(tokens)`: `clip.tokenize(...)` tokens (B, 77) -> (B, embed_dim)
    All three return unnormalised embeddings. `forward` returns L2-normalised embeddings, the pairwise logits and
    the paper's loss for whichever modalities are given.
    """

    def __init__(self, config: AudioCLIPConfig | None = None, **overrides):
        cfg = replace(config or AudioCLIPConfig(), **overrides)
        super().__init__(
            embed_dim=cfg.embed_dim,
            image_resolution=cfg.image_resolution,
            vision_layers=cfg.vision_layers,
            vision_width=cfg.vision_width,
            vision_patch_size=None,
            context_length=cfg.context_length,
            vocab_size=cfg.vocab_size,
            transformer_width=cfg.transformer_width,
            transformer_heads=cfg.transformer_heads,
            transformer_layers=cfg.transformer_layers,
        )
        self.config = cfg
        self.audio = ESResNeXtFBSP(replace(cfg.audio, num_classes=cfg.embed_dim))
        self.logit_scale_ai = nn.Parameter(torch.log(torch.ones([]) * 100))
        self.logit_scale_at = nn.Parameter(torch.log(torch.ones([]) * 100))
        self.towers = tuple(TOWERS)

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    @property
    def dtype(self) -> torch.dtype:
        """CLIP's: the image head's dtype (the text head's, or the logit scale's, where it was left out)."""
        if self.visual is not None:
            return self.visual.conv1.weight.dtype
        return (self.text_projection if self.text_projection is not None else self.logit_scale).dtype

    def drop_towers(self, *names: str) -> None:
        """Leave out the encoders of `names` (of `TOWERS`): their memory goes back, and using one afterwards is a
        one-line error. A window-by-window classification keeps only the audio head once the labels are embedded."""
        for name in names:
            if name not in TOWERS:
                raise ValueError(f"towers: one of {', '.join(TOWERS)}, got {name!r}")
            for attr in TOWERS[name]:
                setattr(self, attr, None)
        self.towers = tuple(t for t in self.towers if t not in names)

    def needs(self, tower: str) -> None:
        """One line when `tower` was left out (`drop_towers`)."""
        if tower not in self.towers:
            raise ValueError(
                f"this model was loaded without its {tower} encoder (towers: {', '.join(self.towers) or 'none'}); "
                f"load it with towers including {tower!r}"
            )

    def encode_audio(self, audio: torch.Tensor) -> torch.Tensor:
        self.needs("audio")
        return self.audio(audio.to(self.device))

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        self.needs("image")
        return super().encode_image(image)

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        self.needs("text")
        return super().encode_text(text)

    def tokenize(self, texts: list[str] | list[list[str]], template: str = "{}") -> torch.Tensor:
        """Texts (or per-sample label lists, joined with ", ") formatted into `template`, as CLIP tokens."""
        joined = [t if isinstance(t, str) else ", ".join(t) for t in texts]
        return clip.tokenize([template.format(t) for t in joined], context_length=self.context_length).to(self.device)

    def log_scales(self) -> dict[str, torch.Tensor]:
        return {
            "logit_scale_ai": self.logit_scale_ai,
            "logit_scale_at": self.logit_scale_at,
            "logit_scale": self.logit_scale,
        }

    def embed(
        self,
        audio: torch.Tensor | None = None,
        image: torch.Tensor | None = None,
        text: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | None]:
        """L2-normalised embeddings of the given modalities (None where not given)."""
        out = {
            "audio": None if audio is None else self.encode_audio(audio),
            "image": None if image is None else self.encode_image(image),
            "text": None if text is None else self.encode_text(text.to(self.device)),
        }
        return {k: None if v is None else v / v.norm(dim=-1, keepdim=True) for k, v in out.items()}

    def loss(self, embeddings: dict[str, torch.Tensor | None]) -> torch.Tensor | None:
        """The paper's loss: pairwise symmetric contrastive terms / n!, plus the TTF loss when audio is present."""
        loss = contrastive_loss(embeddings, self.log_scales())
        if loss is not None and embeddings.get("audio") is not None:
            loss = loss + self.audio.ttf_loss()
        return loss

    def forward(
        self,
        audio: torch.Tensor | None = None,
        image: torch.Tensor | None = None,
        text: torch.Tensor | None = None,
    ) -> tuple[dict[str, torch.Tensor | None], dict[str, torch.Tensor], torch.Tensor | None]:
        """Returns (normalised embeddings by modality, logits by pair 'audio_image'/'audio_text'/'image_text',
        loss or None)."""
        emb = self.embed(audio, image, text)
        logits = {}
        for a, b, scale in PAIRS:
            if emb[a] is not None and emb[b] is not None:
                logits[f"{a}_{b}"] = clamp_scale(self.log_scales()[scale]) * emb[a] @ emb[b].T
        return emb, logits, self.loss(emb)
