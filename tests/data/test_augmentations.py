"""The paper's augmentations (audioclip.data.transforms): lengths, flip, scale range, SNR range, seeding."""

import math

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from audioclip.data.transforms import (
    Compose,
    RandomCropPad,
    RandomFlip,
    RandomNoise,
    RandomScale,
    eval_audio_transform,
    time_scale,
    train_audio_transform,
)


def clip(channels: int = 2, samples: int = 1000, seed: int = 0) -> torch.Tensor:
    return torch.randn(channels, samples, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3000


def test_flip_reverses_time_exactly_and_keeps_channels():
    audio = clip()
    assert torch.equal(RandomFlip(p=1.0)(audio), audio.flip(-1))
    assert torch.equal(RandomFlip(p=0.0)(audio), audio)


def test_flip_happens_about_half_the_time():
    generator = torch.Generator().manual_seed(1)
    audio = clip(samples=10)
    flips = sum(not torch.equal(RandomFlip()(audio, generator), audio) for _ in range(1000))
    assert 430 < flips < 570


def test_time_scale_interpolates_linearly():
    ramp = torch.arange(10, dtype=torch.float64)[None]
    stretched = time_scale(ramp, 2.0)
    assert stretched.shape == (1, 20)
    # output sample j reads input position j / 2; the last one repeats the final input sample
    assert torch.allclose(stretched[0, :19], torch.arange(19, dtype=torch.float64) / 2)
    assert torch.equal(time_scale(ramp, 1.0), ramp)


def test_random_scale_factor_spans_its_range():
    generator = torch.Generator().manual_seed(2)
    audio = clip(samples=10000)
    factors = [RandomScale(1.5)(audio, generator).shape[-1] / 10000 for _ in range(400)]
    assert min(factors) >= 1 / 1.5 - 1e-3 and max(factors) <= 1.5
    assert min(factors) < 0.72 and max(factors) > 1.4  # both ends of 1.5 ** U(-1, 1) are reached
    # log-uniform: about half the draws shrink the clip
    assert 0.4 < sum(f < 1 for f in factors) / len(factors) < 0.6


@pytest.mark.parametrize("train", [True, False])
def test_crop_takes_a_contiguous_window_centred_at_eval(train):
    audio = clip(samples=1000)
    generator = torch.Generator().manual_seed(3)
    offsets = set()
    for _ in range(50):
        out = RandomCropPad(600, train=train)(audio, generator)
        assert out.shape == (2, 600)
        offset = int(torch.nonzero(audio[0] == out[0, 0])[0])
        assert torch.equal(out, audio[:, offset : offset + 600])
        offsets.add(offset)
    assert (len(offsets) > 10) if train else (offsets == {200})


@pytest.mark.parametrize("train", [True, False])
def test_pad_repeats_the_mean_edge_sample(train):
    audio = clip(samples=400)
    generator = torch.Generator().manual_seed(4)
    lefts = set()
    for _ in range(50):
        out = RandomCropPad(1000, train=train)(audio, generator)
        assert out.shape == (2, 1000)
        left = next(i for i in range(1000) if torch.equal(out[:, i : i + 400], audio))
        lefts.add(left)
        assert torch.allclose(out[:, :left], audio[:, 0].mean().expand(2, left))
        assert torch.allclose(out[:, left + 400 :], audio[:, -1].mean().expand(2, 600 - left))
    assert (len(lefts) > 10) if train else (lefts == {300})


def test_noise_snr_lies_in_range_and_covers_it():
    audio = clip(samples=20000)
    generator = torch.Generator().manual_seed(5)
    snrs = []
    for _ in range(150):
        noise = RandomNoise(10.0, 120.0, p=1.0)(audio, generator) - audio
        snrs.append(10 * math.log10(audio.pow(2).mean() / noise.pow(2).mean()))
    # the noise power of 20,000 samples is within about 0.1 dB of its target
    assert 10.0 - 0.2 <= min(snrs) and max(snrs) <= 120.0 + 0.2
    assert min(snrs) < 20 and max(snrs) > 110


def test_noise_is_added_a_quarter_of_the_time():
    audio = clip(samples=100)
    generator = torch.Generator().manual_seed(6)
    noisy = sum(not torch.equal(RandomNoise()(audio, generator), audio) for _ in range(1000))
    assert 200 < noisy < 300


def test_train_transform_always_yields_the_target_length():
    transform = train_audio_transform(1000)
    assert [type(t) for t in transform.transforms] == [RandomScale, RandomFlip, RandomCropPad, RandomNoise]
    for samples in (300, 1000, 2500):
        for seed in range(10):
            assert transform(clip(samples=samples), torch.Generator().manual_seed(seed)).shape == (2, 1000)


def test_eval_transform_is_deterministic():
    transform = eval_audio_transform(1000)
    audio = clip(samples=1500)
    torch.manual_seed(0)
    first = transform(audio)
    torch.manual_seed(1)
    assert torch.equal(first, transform(audio))
    assert torch.equal(first, audio[:, 250:1250])


def test_global_rng_drives_draws_without_a_generator():
    transform = train_audio_transform(800)
    audio = clip(samples=1000)
    torch.manual_seed(7)
    first = transform(audio)
    torch.manual_seed(7)
    assert torch.equal(first, transform(audio))
    assert isinstance(transform, Compose)


class SameClip(Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> torch.Tensor:
        return Compose([RandomScale(), RandomFlip()])(clip(samples=500))


def test_dataloader_workers_draw_different_augmentations():
    torch.manual_seed(0)
    outputs = [batch[0] for batch in DataLoader(SameClip(), batch_size=1, num_workers=2)]
    distinct = {(tuple(out.shape), float(out[0, :5].sum())) for out in outputs}
    assert len(distinct) == len(outputs)
