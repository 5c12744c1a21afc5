"""The paper's training augmentations (Guzhov et al. 2021, sec. 4.2) applied to a whole batch on its device.

Same distributions and, for the same draws, the same output as the per-sample path of ``data/transforms.py``
(``RandomScale(1.5)``, ``RandomFlip(0.5)``, ``RandomCropPad(length)``, ``RandomNoise(10, 120, 0.25)``, in this
order): the per-clip numbers (scale, flip, offset, noise on/off, SNR) are drawn on the host in the same order from the
same generator, and the work (time-scale interpolation of 441,000 samples, noise of the same size) is one gather and
one multiply-add on the accelerator instead of ~3.5 ms of float64 CPU per item in a loader worker. Loader workers then
only decode int16 audio, which keeps their host-to-device copies at half the bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

MAX_SCALE, FLIP_P, NOISE_P, SNR_DB = 1.5, 0.5, 0.25, (10.0, 120.0)


def _draw(num: int, length: int, generator: torch.Generator | None) -> tuple[float, bool, int, float | None]:
    """One clip's draws, in the per-sample path's order: scale, flip, crop/pad offset, noise (p, SNR)."""
    factor = MAX_SCALE ** (-1.0 + 2.0 * torch.rand((), generator=generator).item())
    flip = torch.rand((), generator=generator).item() < FLIP_P
    scaled = max(1, int(num * factor))
    slack = abs(scaled - length)
    offset = int(torch.randint(0, slack + 1, (), generator=generator).item()) if slack else 0
    snr = None
    if torch.rand((), generator=generator).item() < NOISE_P:
        snr = SNR_DB[0] + (SNR_DB[1] - SNR_DB[0]) * torch.rand((), generator=generator).item()
    return factor, flip, offset, snr


def augment_batch(
    audio: torch.Tensor,
    lengths: torch.Tensor,
    length: int,
    generators: Sequence[torch.Generator | None] | None = None,
) -> torch.Tensor:
    """Augment ``audio`` (B, C, T) int16 or float, clip ``i`` valid for ``lengths[i]`` samples, to float (B, C,
    ``length``) on ``audio``'s device. ``generators[i]`` (or torch's global RNG) draws clip ``i``'s numbers."""
    batch, channels, _ = audio.shape
    device = audio.device
    generators = list(generators) if generators is not None else [None] * batch
    positions, pads, snrs, noise_generators = [], [], [], []
    for i in range(batch):
        num = int(lengths[i])
        factor, flip, offset, snr = _draw(num, length, generators[i])
        scaled = max(1, int(num * factor))
        # index j of the output in the scaled (and maybe reversed) clip, as RandomCropPad crops or pads it
        j = torch.arange(length, dtype=torch.float64) + (offset if scaled > length else -offset)
        inside = (j >= 0) & (j < scaled)
        k = j.clamp(0, scaled - 1)
        if flip:
            k = scaled - 1 - k
        positions.append(k / factor)  # where time_scale reads the input
        pads.append((inside, j < 0))
        snrs.append(snr)
        noise_generators.append(generators[i])
    position = torch.stack(positions).to(device)  # (B, L) float64
    left = torch.minimum(position.long(), (lengths.to(device) - 1).view(-1, 1))
    right = torch.minimum(left + 1, (lengths.to(device) - 1).view(-1, 1))
    weight = (position - left).float().unsqueeze(1)
    source = audio.float()
    index_l = left.unsqueeze(1).expand(batch, channels, length)
    index_r = right.unsqueeze(1).expand(batch, channels, length)
    out = source.gather(2, index_l) * (1 - weight) + source.gather(2, index_r) * weight
    inside = torch.stack([p[0] for p in pads]).to(device).unsqueeze(1)
    before = torch.stack([p[1] for p in pads]).to(device).unsqueeze(1)
    # RandomCropPad pads with the mean over channels of the edge sample of the scaled clip
    first = out.gather(2, _edge(inside, True).expand(-1, channels, 1)).mean(dim=1, keepdim=True)
    last = out.gather(2, _edge(inside, False).expand(-1, channels, 1)).mean(dim=1, keepdim=True)
    out = torch.where(inside, out, torch.where(before, first, last))
    for i, snr in enumerate(snrs):
        if snr is None:
            continue
        power = out[i].double().pow(2).mean().item()
        std = (power / 10.0 ** (snr / 10.0)) ** 0.5
        # drawn on the host like the per-sample path, so a seeded clip gets the same noise on any device
        noise = torch.randn((channels, length), generator=noise_generators[i], dtype=torch.float32)
        out[i] = out[i] + noise.to(device) * std
    return out


def _edge(inside: torch.Tensor, first: bool) -> torch.Tensor:
    """Index (B, C, 1) of the first or last output sample that lies inside the scaled clip."""
    steps = torch.arange(inside.shape[-1], device=inside.device).expand_as(inside[:, 0])
    masked = torch.where(inside[:, 0], steps, steps.new_full((), -1 if not first else inside.shape[-1]))
    index = masked.min(dim=-1).values if first else masked.max(dim=-1).values
    return index.view(-1, 1, 1).clamp(0, inside.shape[-1] - 1)
