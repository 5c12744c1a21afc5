"""AudioCLIP's training objective: symmetric contrastive losses over modality pairs, plus the TTF loss.

References:
- Radford et al., "Learning Transferable Visual Models From Natural Language Supervision" (CLIP), fig. 3: the
  symmetric cross-entropy over a batch's similarity matrix.
- Guzhov et al., "AudioCLIP", section 3.3: one such term per available pair (audio-image, audio-text,
  image-text); the reference divides their sum by n! for n active pairs and adds the fbsp TTF loss.
- open_clip's `ClipLoss(local_loss=True, gather_with_grad=True)`: under DDP each rank scores its own rows
  against the embeddings of the *global* batch, gathered with gradients, with labels offset by the rank. With
  DDP's gradient averaging this gives exactly the loss and gradients of one process seeing the whole batch.

Duplicates: the positive of row i is column i only. When two rows of a batch share a class (fine-tuning pairs each
clip with its class's text, so two dog clips bring two identical "dog" text rows), the other row counts as a
negative that scores as high as the positive, and each such row's term cannot go below log 2.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from audioclip.process_group import rank_and_world

# (first modality, second modality, name of the logit scale)
PAIRS: tuple[tuple[str, str, str], ...] = (
    ("audio", "image", "logit_scale_ai"),
    ("audio", "text", "logit_scale_at"),
    ("image", "text", "logit_scale"),
)


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from every rank along dim 0; gradients flow back to each rank's own rows."""
    _, world = rank_and_world()
    if world == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


def clamp_scale(log_scale: torch.Tensor) -> torch.Tensor:
    """exp of a learnable log logit scale, clamped to [1, 100] as the reference does."""
    return torch.clamp(log_scale.exp(), min=1.0, max=100.0)


def symmetric_contrastive(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """CE(S, y) + CE(S^T, y) for L2-normalised local embeddings `a`, `b` (rows paired by index).

    Under DDP the rows of this rank are scored against all ranks' rows (`local_loss` as in open_clip), so the
    value is this rank's share of the global loss and DDP's gradient averaging yields the global gradient.
    """
    rank, world = rank_and_world()
    all_a, all_b = (gather_with_grad(a), gather_with_grad(b)) if world > 1 else (a, b)
    labels = torch.arange(a.shape[0], device=a.device) + rank * a.shape[0]
    return F.cross_entropy(scale * a @ all_b.T, labels) + F.cross_entropy(scale * b @ all_a.T, labels)


def contrastive_loss(
    embeddings: Mapping[str, torch.Tensor | None], log_scales: Mapping[str, torch.Tensor]
) -> torch.Tensor | None:
    """The paper's contrastive loss from any subset of the modalities 'audio', 'image', 'text'.

    `embeddings` holds L2-normalised (B, D) tensors (missing or None for absent modalities); `log_scales` the
    learnable log logit scales by name (`logit_scale_ai`, `logit_scale_at`, `logit_scale`). Returns None when
    fewer than two modalities are present.
    """
    terms = [
        symmetric_contrastive(embeddings[x], embeddings[y], clamp_scale(log_scales[scale]))
        for x, y, scale in PAIRS
        if embeddings.get(x) is not None and embeddings.get(y) is not None
    ]
    if not terms:
        return None
    return torch.stack(terms).sum() / math.factorial(len(terms))


def class_logits(audio: torch.Tensor, class_text: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Zero-shot-style class scores of unit-norm audio embeddings (B, D) against unit-norm class-name text
    embeddings (C, D): the clamped audio-text logit scale times their cosines (fine-tuning's evaluation)."""
    return clamp_scale(log_scale) * audio @ class_text.T


def audio_head_loss(
    logits: torch.Tensor, target: torch.Tensor, multilabel: bool, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """The standalone audio head's classification loss (the TTF loss is added by the caller).

    Multi-label (AudioSet): the reference's BCE, summed over classes and averaged over the batch; with per-clip
    `weights` each clip's sum is weighted first. Single-label (ESC-50 / US8K audio head): cross-entropy.
    """
    if not multilabel:
        return F.cross_entropy(logits, target)
    if weights is None:
        return F.binary_cross_entropy_with_logits(logits, target.float(), reduction="sum") / logits.shape[0]
    per_clip = F.binary_cross_entropy_with_logits(logits, target.float(), reduction="none").sum(-1)
    return (per_clip * weights).sum() / logits.shape[0]
