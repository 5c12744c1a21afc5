"""This process's place in the torch.distributed process group, for code that runs with or without one (the
contrastive loss's gather, evaluation's shards, loader workers, global-batch BatchNorm)."""

from __future__ import annotations

import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, or (0, 1) in a single process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
