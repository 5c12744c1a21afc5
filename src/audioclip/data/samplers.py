"""Sampling for DataLoaders that survive a resume and a signal: the order, the augmentation seeds, the workers.

- `ResumableSampler` + `ResumableDataLoader`: an epoch's order is a function of (seed, epoch), every sample carries
  its own augmentation seed, and the samples consumed are part of the checkpoint. Lightning restores the state of
  a loader that has `state_dict`/`load_state_dict`; a plain DataLoader would replay the epoch from its start with a
  new order, so the resumed run would train on other batches than the uninterrupted one.
- `EvalShardSampler`: every evaluation sample on exactly one DDP rank, none repeated.
(The loader workers' signal handling and start method: `audioclip.data.workers`.)

See docs/reliability.md for the faults tested.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Dataset, DistributedSampler

log = logging.getLogger(__name__)

class ResumableSampler(DistributedSampler):
    """`DistributedSampler`'s per-epoch shuffle of this rank's share, yielding `(index, augmentation seed)`.

    The seed of a sample depends on (seed, epoch, index) only, so its augmentation is the same whichever worker
    process loads it and whether or not the run was resumed. `resume(epoch, samples)` makes the next iteration of
    that epoch start after the first `samples` of the epoch's global order.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self._resume_epoch: int | None = None
        self._resume_samples = 0

    def resume(self, epoch: int, samples: int) -> None:
        self.set_epoch(epoch)
        self._resume_epoch, self._resume_samples = epoch, samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())
        if self._resume_epoch == self.epoch:
            # rank r holds the global order's positions r, r + R, ...: the consumed prefix is samples / R of them
            indices = indices[self._resume_samples // self.num_replicas :]
        self._resume_epoch = None
        for index in indices:
            seed = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1, np.uint64)[0]
            yield index, int(seed)


class EvalShardSampler(DistributedSampler):
    """Rank r of R evaluates samples r, r + R, ...: every sample exactly once, unlike `DistributedSampler`, which
    pads the last round with repeats (a test accuracy under DDP would count them). Ranks may get one batch more
    or less; the metrics synchronise once, at the end of the epoch. A `DistributedSampler`, so Lightning keeps it.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, len(self.dataset), self.num_replicas))


class ResumableDataLoader(DataLoader):
    """A training DataLoader over a `ResumableSampler` whose position is saved in Lightning checkpoints.

    The state is the epoch and the number of samples handed out (Lightning does not prefetch from a loader with a
    length, so that is what was trained on). Iteration starts lazily, at the first batch, after Lightning's
    `set_epoch`: worker processes would otherwise prefetch indices of the wrong epoch.
    """

    def __init__(self, dataset: Dataset, sampler: ResumableSampler, **kwargs: Any) -> None:
        super().__init__(dataset, sampler=sampler, **kwargs)
        self._samples = 0

    def __iter__(self) -> Iterator[Any]:
        sampler: ResumableSampler = self.sampler
        self._samples = sampler._resume_samples if sampler._resume_epoch == sampler.epoch else 0
        for batch in super().__iter__():
            self._samples += self.batch_size * sampler.num_replicas
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "samples": self._samples}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["samples"] % (self.batch_size * self.sampler.num_replicas):
            log.warning(
                "resuming mid-epoch with another batch size x world size than the checkpoint's: %d samples of "
                "epoch %d were consumed, the rank's share is rounded down",
                state["samples"],
                state["epoch"],
            )
        self.sampler.resume(state["epoch"], state["samples"])
