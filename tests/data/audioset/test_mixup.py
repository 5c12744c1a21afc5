"""Mixup for pretrain-audio (data/audioset/mixup.py): the mixing maths by hand, the Beta draws, off by default,
seeded by the batch counter a checkpoint restores, training batches only."""

from types import SimpleNamespace

import pytest
import torch

from audioclip.data.audioset import AudioSetDataModule
from audioclip.data.audioset.mixup import draw_mixup, mix, mixup_batch


def test_mix_weights_each_clip_and_target_with_its_partner_by_hand():
    audio = torch.tensor([[[2.0, 0.0]], [[0.0, 4.0]], [[10.0, 10.0]]])  # (B=3, C=1, T=2)
    target = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
    lam, partner = torch.tensor([0.5, 0.9, 0.2]), torch.tensor([2, 0, 1])
    # clip 0: .5*[2,0] + .5*[10,10]; clip 1: .9*[0,4] + .1*[2,0]; clip 2: .2*[10,10] + .8*[0,4]
    assert torch.allclose(mix(audio, lam, partner), torch.tensor([[[6.0, 5.0]], [[0.2, 3.6]], [[2.0, 5.2]]]))
    # targets: .5*y0 + .5*y2; .9*y1 + .1*y0; .2*y2 + .8*y1
    expected = torch.tensor([[0.5, 0.0, 0.5], [0.1, 0.9, 0.9], [0.0, 0.8, 1.0]])
    assert torch.allclose(mix(target, lam, partner), expected)


def test_int16_audio_is_mixed_in_float():
    audio = torch.tensor([[[32767]], [[-32768]]], dtype=torch.int16)
    mixed = mix(audio, torch.tensor([0.5, 0.5]), torch.tensor([1, 0]))
    assert mixed.dtype == torch.float32 and mixed.flatten().tolist() == [-0.5, -0.5]


def test_draws_follow_beta_alpha_alpha_and_pair_every_clip_once():
    alpha = 0.2
    lam = torch.cat([draw_mixup(64, alpha, (0, 0, k))[0] for k in range(100)]).double()
    # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)) = 1 / 5.6
    assert lam.min() >= 0 and lam.max() <= 1
    assert lam.mean().item() == pytest.approx(0.5, abs=0.02)
    assert lam.var().item() == pytest.approx(1 / 5.6, abs=0.01)
    _, partner = draw_mixup(64, alpha, (0, 0, 3))
    assert sorted(partner.tolist()) == list(range(64))


def _trainer(fetched: int, training: bool = True, rank: int = 0) -> SimpleNamespace:
    progress = SimpleNamespace(total=SimpleNamespace(ready=fetched))
    loop = SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress))
    return SimpleNamespace(training=training, global_rank=rank, fit_loop=loop)


def _batch() -> dict:
    torch.manual_seed(0)
    return {
        "audio": torch.randn(8, 1, 16),
        "target": (torch.rand(8, 527) < 0.01).float(),
        "id": [str(i) for i in range(8)],
    }


def test_mixup_is_off_by_default():
    datamodule = AudioSetDataModule(frames=False)
    datamodule.trainer = _trainer(5)
    batch = _batch()
    out = datamodule.on_after_batch_transfer(_batch(), 0)
    assert datamodule.mixup_alpha == 0
    assert torch.equal(out["audio"], batch["audio"]) and torch.equal(out["target"], batch["target"])


def test_a_batch_is_mixed_the_same_way_again_after_a_resume_and_only_in_training():
    datamodule = AudioSetDataModule(frames=False, mixup_alpha=0.4, seed=7)
    datamodule.trainer = _trainer(5)
    first = datamodule.on_after_batch_transfer(_batch(), 0)
    targets = first["target"][first["target"] > 0]
    assert ((targets > 0) & (targets < 1)).any()  # soft targets: clips were mixed
    again = datamodule.on_after_batch_transfer(_batch(), 0)  # the 6th batch of a resumed run: same counter
    assert torch.equal(first["audio"], again["audio"]) and torch.equal(first["target"], again["target"])
    datamodule.trainer = _trainer(6)
    assert not torch.equal(datamodule.on_after_batch_transfer(_batch(), 0)["audio"], first["audio"])
    datamodule.trainer = _trainer(5, rank=1)  # each rank its own draws
    assert not torch.equal(datamodule.on_after_batch_transfer(_batch(), 0)["audio"], first["audio"])
    datamodule.trainer = _trainer(5, training=False)  # validation and test batches stay as they are
    assert torch.equal(datamodule.on_after_batch_transfer(_batch(), 0)["audio"], _batch()["audio"])


def test_mixup_needs_frames_off_and_a_non_negative_alpha():
    with pytest.raises(ValueError, match="mixup_alpha: .*frames: false"):
        AudioSetDataModule(mixup_alpha=0.4)  # frames on: a contrastive phase's batch
    with pytest.raises(ValueError, match="mixup_alpha: must be >= 0"):
        AudioSetDataModule(frames=False, mixup_alpha=-1.0)
    with pytest.raises(ValueError, match="mixup_alpha"):
        mixup_batch({**_batch(), "image": torch.zeros(8, 3, 2, 2)}, 0.4, (0, 0, 0))
