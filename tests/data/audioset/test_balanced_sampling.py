"""Class-balanced AudioSet training: repeat tiers packed once, drawn in proportion to their repeat factors.

64 clips: class 0 on 44, class 1 on 16 (a quarter: repeat factor sqrt(1 / 0.25) = 2 with threshold 1), class 2 on
4 (a sixteenth: factor 4). So tier-1 holds 44 clips, tier-2 16, tier-4 4, and a draw should land in them with
probabilities 44 : 32 : 16.
"""

from collections import Counter
from pathlib import Path

import pytest
import torch
from litdata.utilities.env import _DistributedEnv
from test_cluster_scale import fake_clips

from audioclip.data.audioset import AudioSetDataModule
from audioclip.data.audioset.datamodule import AudioSetStreamingDataset
from audioclip.data.audioset.metadata import select_shard
from audioclip.data.audioset.pack import pack
from audioclip.data.audioset.parts import merge

TIER_SIZES = {1: 44, 2: 16, 4: 4}


def labels_of(i: int) -> list[int]:
    return [2] if i >= 60 else [1] if i >= 44 else [0]


@pytest.fixture(scope="module")
def tiered(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("balanced")
    segments = fake_clips(root, 64, labels_of=labels_of)
    one = pack(segments, root, root / "one", workers=2, balance_tiers=True, repeat_threshold=1.0)
    for shard in ((0, 2), (1, 2)):  # the same tiers from two shard tasks' parts, merged
        mine = select_shard(segments, shard)
        pack(mine, root, root / "parts", workers=2, balance_tiers=True, repeat_threshold=1.0,
             frequency_segments=segments, part=f"{shard[0]}-of-2")  # fmt: skip
    merge(root / "parts")
    return {"root": root, "one": one}


def tier_of(ytid: str) -> int:
    return {0: 1, 1: 2, 2: 4}[labels_of(int(ytid[4:]))[0]]


def test_clips_are_packed_by_repeat_tier(tiered: dict) -> None:
    for out in ("one", "parts"):
        tiers = AudioSetDataModule(train_dir=str(tiered["root"] / out))._train_dataset()._datasets
        assert [len(d) for d in tiers] == list(TIER_SIZES.values())
        assert all(tier_of(d[i]["id"]) == r for d, r in zip(tiers, TIER_SIZES, strict=True) for i in range(len(d)))


def _draws(loader, epochs: int) -> list[list[str]]:
    return [[y for batch in loader for y in batch["id"]] for _ in range(epochs)]


def _datamodule(train_dir: Path, **kwargs) -> AudioSetDataModule:
    dm = AudioSetDataModule(train_dir=str(train_dir), batch_size=1, num_workers=0, clip_seconds=0.25, **kwargs)
    dm.setup("fit")
    return dm


def test_balanced_draws_follow_the_repeat_factors_across_two_ranks_and_a_resume(tiered: dict, monkeypatch) -> None:
    """Over many epochs on 2 simulated ranks, with each rank resumed mid-epoch from its state dict once, tier r is
    drawn with probability n_r * r / sum(n * r); within an epoch the ranks never draw the same clip."""
    train_dir = tiered["root"] / "parts"
    # what is drawn is the question here, not decoding: an item is its YTID (and a token audio for collate)
    monkeypatch.setattr(
        AudioSetStreamingDataset,
        "_decode",
        lambda self, sample: {"audio": torch.ones(1, 1), "target": torch.zeros(1), "text": "", "id": sample["ytid"]},
    )
    counts: Counter = Counter()
    by_rank = []
    for rank in (0, 1):
        # what LitData sees on DDP rank `rank` of 2 (datasets and loader alike), simulated in this process
        monkeypatch.setattr(_DistributedEnv, "detect", classmethod(lambda cls, rank=rank: cls(2, rank, 1)))
        dm = _datamodule(train_dir, balanced=True)
        loader = dm.train_dataloader()
        epochs = _draws(loader, 20)
        iterator = iter(loader)
        before = [y for _ in range(3) for y in next(iterator)["id"]]
        state = dm.state_dict()
        del iterator
        resumed = _datamodule(train_dir, balanced=True)
        resumed.load_state_dict(state)
        after = _draws(resumed.train_dataloader(), 1)[0]
        epochs.append(before + after)
        epochs += _draws(resumed.train_dataloader(), 20)
        for epoch in epochs:
            assert len(set(epoch)) == len(epoch), "a clip came twice within one epoch"
            counts.update(tier_of(y) for y in epoch)
        by_rank.append(epochs)
    for epoch, (a, b) in enumerate(zip(*by_rank, strict=True)):
        assert not set(a) & set(b), f"the ranks shared a clip in epoch {epoch}"
    total = sum(counts.values())
    weights = {r: n * r for r, n in TIER_SIZES.items()}
    for tier, weight in weights.items():
        assert counts[tier] / total == pytest.approx(weight / sum(weights.values()), abs=0.06), (tier, counts)


def test_unbalanced_training_on_tiers_sees_every_clip_once(tiered: dict) -> None:
    dm = _datamodule(tiered["root"] / "one")
    epoch = _draws(dm.train_dataloader(), 1)[0]
    assert len(epoch) == len(set(epoch)) == 64


def test_balanced_needs_tiers(tiered: dict, tmp_path: Path) -> None:
    segments = fake_clips(tmp_path, 4)
    pack(segments, tmp_path, tmp_path / "plain", workers=1)
    with pytest.raises(ValueError, match=r"balanced=True needs shards packed with --balance-tiers"):
        AudioSetDataModule(train_dir=str(tmp_path / "plain"), balanced=True).setup("fit")
