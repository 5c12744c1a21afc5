"""Mixup for `pretrain-audio` (Zhang et al. 2018, "mixup: Beyond Empirical Risk Minimization"), as AudioSet
classifiers train with it (PANNs, Kong et al. 2020, sec. 3.2; AST, Gong et al. 2021, sec. 3): each training clip is
mixed with another clip of the batch, waveform and multi-hot target alike,

    audio_i  = lam_i * audio_i  + (1 - lam_i) * audio_j(i)
    target_i = lam_i * target_i + (1 - lam_i) * target_j(i),    lam_i ~ Beta(alpha, alpha),

with j a random permutation of the batch. The soft targets go into the same BCE (`binary_cross_entropy_with_logits`
takes targets in [0, 1]); evaluation is untouched. The AudioCLIP paper trains without mixup; this is an opt-in.

Seeded and resumable: the draws of a batch come from (seed, rank, number of training batches fetched so far), a
counter Lightning stores in the checkpoint, so a resumed run mixes its batches as the uninterrupted run did.
Applied on the device after the batch augmentations (`AudioSetDataModule.on_after_batch_transfer`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def draw_mixup(batch_size: int, alpha: float, seed: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """`lam` (B,) drawn from Beta(alpha, alpha) and the partner `j` (B,) of each clip, from `seed`."""
    rng = np.random.default_rng(list(seed))
    lam = torch.from_numpy(rng.beta(alpha, alpha, size=batch_size)).float()
    partner = torch.from_numpy(rng.permutation(batch_size))
    return lam, partner


def mix(tensor: torch.Tensor, lam: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
    """`lam_i * x_i + (1 - lam_i) * x_partner(i)` along the first dimension, in `tensor`'s float dtype."""
    x = tensor.float()
    weight = lam.to(x.device).view(-1, *([1] * (x.dim() - 1)))
    return weight * x + (1 - weight) * x[partner.to(x.device)]


def mixup_batch(batch: dict[str, Any], alpha: float, seed: tuple[int, ...]) -> dict[str, Any]:
    """A training batch with its audio and targets mixed; `text`, `id` (and frames) would no longer describe it."""
    if "image" in batch:
        raise ValueError("mixup_alpha: mixes audio and targets only, not a batch with frames (contrastive phases)")
    lam, partner = draw_mixup(len(batch["audio"]), alpha, seed)
    batch["audio"] = mix(batch["audio"], lam, partner)
    batch["target"] = mix(batch["target"], lam, partner)
    return batch


def batch_seed(trainer: Any, seed: int) -> tuple[int, ...]:
    """(seed, rank, training batches fetched before this one): the same for a batch in a resumed run."""
    fetched = trainer.fit_loop.epoch_loop.batch_progress.total.ready
    return (seed, trainer.global_rank, fetched)
