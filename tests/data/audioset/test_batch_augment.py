"""Batched on-device training augmentations: the per-sample path's output for the same seeds, and its distributions."""

import pytest
import torch

from audioclip.data.audioset.batch_augment import augment_batch
from audioclip.data.transforms import train_audio_transform


@pytest.mark.parametrize("channels", [1, 2])
def test_same_seeds_give_the_per_sample_paths_output(channels: int) -> None:
    length, longest = 4_000, 6_000
    clip_lengths = [6_000, 4_000, 2_500, 3_100, 5_000, 1_000, 4_400, 3_999]  # longer, equal to and shorter than 4,000
    torch.manual_seed(0)
    clips = [torch.randint(-20_000, 20_000, (channels, n), dtype=torch.int16) for n in clip_lengths]
    per_sample = train_audio_transform(length)
    for seed in range(12):  # every branch (flip or not, noise or not, crop or pad) comes up over the seeds
        expected = torch.stack(
            [per_sample(c.float(), torch.Generator().manual_seed(seed * 100 + i)) for i, c in enumerate(clips)]
        )
        batch = torch.zeros(len(clips), channels, longest, dtype=torch.int16)
        for i, c in enumerate(clips):
            batch[i, :, : c.shape[-1]] = c
        generators = [torch.Generator().manual_seed(seed * 100 + i) for i in range(len(clips))]
        got = augment_batch(batch, torch.tensor(clip_lengths), length, generators)
        assert got.shape == expected.shape and got.dtype == torch.float32
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=0.02)


def _summary(out: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per clip of an augmented ramp: reversed?, its slope (1 / scale factor), its largest bend (noise, padding)."""
    steps = out[:, 0, 1:] - out[:, 0, :-1]
    return {
        "flip": (out[:, 0, 0] > out[:, 0, -1]).double(),
        "slope": steps.abs().median(dim=1).values.double(),
        "bend": (steps[:, 1:] - steps[:, :-1]).abs().max(dim=1).values.double(),
    }


def test_draws_follow_the_per_sample_paths_distributions() -> None:
    """2,000 ramps through each path, each from its own random stream: flip, stretch and noise/pad statistics
    are indistinguishable (two-sample Kolmogorov-Smirnov), and flips come up half the time."""
    from scipy.stats import ks_2samp

    n, length = 2_000, 48
    ramp = torch.arange(1, 65, dtype=torch.float32).view(1, 64)
    torch.manual_seed(1)
    per_sample = train_audio_transform(length)
    reference = _summary(torch.stack([per_sample(ramp.clone()) for _ in range(n)]))
    torch.manual_seed(2)
    batched = _summary(augment_batch(ramp.expand(n, 1, 64).contiguous(), torch.full((n,), 64), length))
    assert batched["flip"].mean().item() == pytest.approx(0.5, abs=0.04)
    for name in ("flip", "slope", "bend"):
        assert ks_2samp(reference[name].numpy(), batched[name].numpy()).pvalue > 1e-3, name


def test_datamodule_sends_int16_and_augments_after_transfer(tmp_path) -> None:
    """`device_augment=True`: loader workers send int16 audio and its lengths; the hook Lightning calls after the
    transfer returns the augmented float batch of the batch contract."""
    from test_cluster_scale import fake_clips

    from audioclip.data.audioset import AudioSetDataModule
    from audioclip.data.audioset.pack import pack

    pack(fake_clips(tmp_path, 4), tmp_path, tmp_path / "shards", workers=1)
    options = {"train_dir": str(tmp_path / "shards"), "batch_size": 4, "num_workers": 1, "clip_seconds": 0.2}
    dm = AudioSetDataModule(**options, device_augment=True, frames=False)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["audio"].dtype == torch.int16 and batch["audio"].shape == (4, 1, 8_820)
    assert batch["audio_length"].tolist() == [8_820] * 4
    out = dm.on_after_batch_transfer(batch, 0)
    assert out["audio"].dtype == torch.float32 and out["audio"].shape == (4, 1, 8_820) and "audio_length" not in out
    assert out["audio"].abs().max() > 100
