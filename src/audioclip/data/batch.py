"""The batch contract (docs/design.md, "The batch contract") every DataModule yields, so every phase can take
every dataset: `audio` float (B, C, T) at 44.1 kHz in the int16 value range, `target` (B,) or a multi-hot (B, 527),
`text` and `id` lists of B strings, `image` (B, 3, 224, 224) when the dataset has frames.

Dividing the global batch by the world size with a loud error follows ashleve/lightning-hydra-template.
"""

from __future__ import annotations

from typing import Any

import torch


def per_device_batch_size(global_batch_size: int, world_size: int) -> int:
    """Split the global batch over the DDP ranks; refuse a split that would change the batch size."""
    if global_batch_size < 1 or world_size < 1:
        raise ValueError(f"batch_size ({global_batch_size}) and world size ({world_size}) must be positive")
    if global_batch_size % world_size:
        raise ValueError(
            f"batch_size={global_batch_size} is the global batch size and must be divisible by the number of "
            f"devices (world size {world_size}); choose a multiple of {world_size}"
        )
    return global_batch_size // world_size


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack a list of items into one batch dict of the batch contract."""
    shapes = {tuple(item["audio"].shape) for item in batch}
    if len(shapes) > 1:
        raise ValueError(
            f"collate needs audio of one shape, got {sorted(shapes)} for ids {[item['id'] for item in batch]}; "
            "crop / pad clips to a fixed length first (transforms.RandomCropPad)"
        )
    targets = [item["target"] for item in batch]
    out = {
        "audio": torch.stack([item["audio"] for item in batch]).float(),
        "target": torch.stack(targets) if isinstance(targets[0], torch.Tensor) else torch.tensor(targets),
        "text": [item["text"] for item in batch],
        "id": [item["id"] for item in batch],
    }
    if "image" in batch[0]:
        out["image"] = torch.stack([item["image"] for item in batch])
    skipped = [entry for item in batch for entry in item.get("skipped", ())]
    if skipped:
        # "<path>: <problem>" of clips replaced under on_bad_file="skip"; tasks.callbacks.BadDataLog reports them
        out["skipped"] = skipped
    return out
