"""Every rank of a 2-process run: the resumable training sampler's shares and resume positions, and the evaluation
sets that each rank embeds a share of and then gathers (gloo on CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from gloo import gloo_group, spawn
from torch.utils.data import Dataset

from audioclip.data.samplers import ResumableDataLoader, ResumableSampler
from audioclip.data.synthetic import write_esc50
from audioclip.evaluation.embedded import embed_dataset
from audioclip.evaluation.zeroshot import zeroshot


class Keys(Dataset):
    """Item = the (index, augmentation seed) key the sampler hands out."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, int]:
        return key


def _epoch(rank: int, epoch: int = 1) -> list[tuple[int, int]]:
    sampler = ResumableSampler(Keys(), num_replicas=2, rank=rank, seed=3)
    sampler.set_epoch(epoch)
    return list(sampler)


def test_two_replicas_share_the_epoch_disjointly_and_each_sample_keeps_its_seed():
    share = [_epoch(0), _epoch(1)]
    indices = [[i for i, _ in s] for s in share]
    assert len(indices[0]) == len(indices[1]) == 6
    assert set(indices[0]).isdisjoint(indices[1]) and set(indices[0]) | set(indices[1]) == set(range(12))
    seeds = dict(share[0] + share[1])
    assert len(set(seeds.values())) == 12  # one augmentation seed per sample
    assert [i for i, _ in _epoch(0, epoch=2)] != indices[0]  # a new order every epoch
    assert dict(_epoch(0, epoch=2) + _epoch(1, epoch=2)) != seeds  # and new augmentations


def _loader(rank: int) -> ResumableDataLoader:
    sampler = ResumableSampler(Keys(), num_replicas=2, rank=rank, seed=3)
    return ResumableDataLoader(Keys(), sampler=sampler, batch_size=2, collate_fn=list, drop_last=True)


def test_each_rank_resumes_after_its_own_share_of_the_consumed_samples():
    for rank in range(2):
        uninterrupted = _epoch(rank)
        loader = _loader(rank)
        loader.sampler.set_epoch(1)
        batches = iter(loader)
        assert next(batches) == uninterrupted[:2]  # one step of 2 per rank: 4 samples of the epoch consumed
        state = loader.state_dict()
        assert state == {"epoch": 1, "samples": 4}

        resumed = _loader(rank)
        resumed.load_state_dict(state)
        assert [key for batch in resumed for key in batch] == uninterrupted[2:], rank
        assert resumed.state_dict() == {"epoch": 1, "samples": 12}  # the whole epoch, both ranks' rows
        resumed.sampler.set_epoch(2)
        assert [key for batch in resumed for key in batch] == _epoch(rank, epoch=2)  # the next epoch is whole


# ---------------------------------------------------------------- evaluation: shards embedded, then gathered


def _embed_worker(rank: int, store: Path, root: Path, checkpoint: Path, out: Path) -> None:
    import audioclip

    with gloo_group(rank, 2, store):
        model = audioclip.load(checkpoint)
        # one loader worker: it starts from the fork server, so the dataset must survive pickling
        data = embed_dataset(model, "esc50", root, folds=[1, 2], batch_size=2, num_workers=1, progress=False)
        result = zeroshot(model, data, num_folds=5)
        torch.save({"data": data, "accuracy": result["accuracy"], "confusion": result["confusion"]},
                   out / f"rank{rank}.pt")  # fmt: skip


@pytest.mark.ddp
def test_two_ranks_embed_disjoint_shares_and_both_end_with_the_whole_set(tiny_checkpoint, tmp_path):
    import audioclip

    # 3 classes x 5 clips: 3 clips per fold, split 2 + 1 over the ranks (an uneven share); folds 1 and 2 only
    root = write_esc50(tmp_path / "esc50", clips_per_class=5, classes=3, progress=False)
    model = audioclip.load(tiny_checkpoint)
    single = embed_dataset(model, "esc50", root, folds=[1, 2], batch_size=2, progress=False)  # builds the cache
    expected = zeroshot(model, single, num_folds=5)
    spawn(_embed_worker, tmp_path, root, tiny_checkpoint, tmp_path)
    by_id = {i: k for k, i in enumerate(single.ids)}
    assert len(by_id) == 6
    for rank in range(2):
        saved = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        data = saved["data"]
        assert sorted(data.ids) == sorted(single.ids)  # every clip once: no clip lost or embedded twice
        rows = [by_id[i] for i in data.ids]
        assert data.labels == [single.labels[k] for k in rows] and data.folds == [single.folds[k] for k in rows]
        assert torch.allclose(data.embeddings["audio"], single.embeddings["audio"][rows], atol=1e-5)
        assert saved["accuracy"] == pytest.approx(expected["accuracy"]) and saved["confusion"] == expected["confusion"]


# ---------------------------------------------------------------- loader workers under a process group


def _context_worker(rank: int, store: Path, out: Path) -> None:
    from audioclip.data.workers import worker_context

    with gloo_group(rank, 2, store):
        (out / f"rank{rank}.txt").write_text(f"{worker_context(2).get_start_method()} {worker_context(0)}")


@pytest.mark.ddp
def test_workers_of_a_rank_start_from_a_fork_server_and_a_single_process_forks(tmp_path):
    """A worker forked from a rank inherits the locks of gloo's and W&B's threads (a 2-rank run hung once on one);
    one process has no such threads and keeps the faster fork."""
    from audioclip.data.workers import worker_context

    assert worker_context(2) is None
    spawn(_context_worker, tmp_path, tmp_path)
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)] == ["forkserver None"] * 2
