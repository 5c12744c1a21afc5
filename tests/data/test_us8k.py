"""US8KDataModule: 2 channels at 44.1 kHz, 4 s, each clip min-max scaled to the int16 range."""

import numpy as np
import pytest
import soundfile as sf
import torch

from audioclip.data import US8KDataModule
from audioclip.data.errors import BadFileError
from audioclip.data.synthetic import write_us8k
from audioclip.data.us8k import decode_us8k


@pytest.fixture(scope="module")
def us8k_dm(tmp_path_factory):
    root = write_us8k(tmp_path_factory.mktemp("us8k"), clips_per_class=10, classes=3, progress=False)
    dm = US8KDataModule(root, fold=4, batch_size=3, num_workers=0, val_fraction=0.2, progress=False)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_splits_and_class_text(us8k_dm):
    assert (len(us8k_dm.train_set), len(us8k_dm.val_set), len(us8k_dm.test_set)) == (21, 6, 3)
    assert us8k_dm.class_names == ["air conditioner", "car horn", "children playing"]
    assert all(us8k_dm.root.joinpath("audio", "fold4", i).exists() for i in us8k_dm.test_set.ids)


def test_items_are_stereo_4s_and_scaled_to_the_int16_range(us8k_dm):
    source_channels = set()
    for dataset in (us8k_dm.val_set, us8k_dm.test_set):
        for index in range(len(dataset)):
            item = dataset[index]
            audio, length = item["audio"], int(dataset.lengths[index])
            assert audio.shape == (2, 176400) and audio.dtype == torch.float32
            (path,) = us8k_dm.root.glob(f"audio/fold*/{item['id']}")
            source = sf.info(path)
            # the stored length is the resampled duration, capped at 4 s
            assert abs(length - min(176400, round(source.duration * 44100))) <= 1
            start = round((176400 - length) / 2)  # centre padding at evaluation
            clip = audio[:, start : start + length]
            assert clip.min() == -32768 and clip.max() == 32767
            assert torch.equal(clip[0], clip[1]) == (source.channels == 1)
            source_channels.add(source.channels)
    assert source_channels == {1, 2}


def test_train_batches_are_fixed_length(us8k_dm):
    batch = next(iter(us8k_dm.train_dataloader()))
    assert batch["audio"].shape == (3, 2, 176400)
    assert batch["text"] == [us8k_dm.class_names[t] for t in batch["target"]]


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 48000])
def test_decoder_resamples_to_44k1_and_cuts_to_4s(tmp_path, rate):
    t = np.arange(int(rate * 4.5)) / rate
    sf.write(tmp_path / "x.wav", 0.3 * np.sin(2 * np.pi * 300 * t), rate, subtype="PCM_16")
    decoded = decode_us8k(tmp_path / "x.wav")
    assert decoded.shape == (2, 176400) and decoded.dtype == np.int16
    assert np.array_equal(decoded[0], decoded[1])
    assert decoded.min() == -32768 and decoded.max() == 32767


def test_decoder_rejects_more_than_two_channels(tmp_path):
    sf.write(tmp_path / "x.wav", np.zeros((100, 3), dtype=np.int16), 44100, subtype="PCM_16")
    with pytest.raises(BadFileError, match="x.wav: has 3 channels"):
        decode_us8k(tmp_path / "x.wav")
