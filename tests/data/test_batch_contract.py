"""The batch contract of DESIGN.md: ``collate`` stacks items into one dict batch."""

import pytest
import torch

from audioclip.data import collate


def item(index: int, samples: int = 100, **extra) -> dict:
    return {"audio": torch.full((2, samples), float(index)), "target": index, "text": f"class {index}",
            "id": f"{index}.wav", **extra}  # fmt: skip


def test_collate_builds_the_batch_dict():
    batch = collate([item(0), item(1), item(2)])
    assert set(batch) == {"audio", "target", "text", "id"}
    assert batch["audio"].shape == (3, 2, 100) and batch["audio"].dtype == torch.float32
    assert torch.equal(batch["target"], torch.tensor([0, 1, 2]))
    assert batch["text"] == ["class 0", "class 1", "class 2"] and batch["id"] == ["0.wav", "1.wav", "2.wav"]


def test_collate_stacks_images_and_multi_hot_targets():
    items = [item(i, image=torch.zeros(3, 224, 224)) for i in range(2)]
    for entry in items:
        entry["target"] = torch.zeros(527)
    batch = collate(items)
    assert batch["image"].shape == (2, 3, 224, 224) and batch["target"].shape == (2, 527)


def test_collate_names_the_clips_of_unequal_length():
    with pytest.raises(ValueError, match=r"one shape.*\['0.wav', '1.wav'\]"):
        collate([item(0), item(1, samples=99)])


def test_training_drops_the_last_incomplete_batch_evaluation_keeps_every_clip(tmp_path):
    from audioclip.data import ESC50DataModule
    from audioclip.data.synthetic import write_esc50

    write_esc50(tmp_path / "esc50", clips_per_class=5, classes=4, seed=0)
    dm = ESC50DataModule(tmp_path / "esc50", fold=1, batch_size=5, num_workers=0, val_fraction=0.25, progress=False)
    dm.setup("fit")
    train = [len(b["id"]) for b in dm.train_dataloader()]
    assert len(dm.train_set) % 5 != 0  # the split leaves an incomplete batch to drop
    assert train and set(train) == {5} and sum(train) == len(dm.train_set) // 5 * 5
    assert sum(len(b["id"]) for b in dm.val_dataloader()) == len(dm.val_set)


def test_eval_shards_cover_every_sample_once() -> None:
    """DDP evaluation: rank r of R takes samples r, r + R, ...; DistributedSampler would pad 7 samples to 8 with a
    repeat, and a test accuracy would count it."""
    from torch.utils.data import DistributedSampler

    from audioclip.data.samplers import EvalShardSampler

    data = list(range(7))
    shards = [list(EvalShardSampler(data, num_replicas=2, rank=r)) for r in range(2)]
    assert shards == [[0, 2, 4, 6], [1, 3, 5]]
    assert [len(EvalShardSampler(data, num_replicas=2, rank=r)) for r in range(2)] == [4, 3]
    padded = [list(DistributedSampler(data, num_replicas=2, rank=r, shuffle=False)) for r in range(2)]
    assert sum(map(len, padded)) == 8  # what it replaces
