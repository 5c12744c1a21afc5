"""ESC50DataModule: real clips decode to their exact int16 samples; batches follow the batch contract."""

import csv
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from audioclip.data import ESC50DataModule
from audioclip.data.esc50 import ESC50_COLUMNS, ESC50_METADATA, decode_esc50
from audioclip.data.layouts import class_text
from audioclip.data.synthetic import write_esc50

# The fixture clips, named "<class>_<official file name>", with their real ESC-50 categories.
FIXTURE_CLIPS = {
    "alarm_clock_3-120526-B-37.wav": "clock_alarm",
    "car_horn_1-24074-A-43.wav": "car_horn",
    "cat_3-95694-A-5.wav": "cat",
    "coughing_1-58792-A-24.wav": "coughing",
    "thunder_3-144891-B-19.wav": "thunderstorm",
}


@pytest.fixture
def real_clips_root(shared_dir, tmp_path):
    """An ESC-50 root holding the five real clips; targets renumbered 0..4 as class indices must be contiguous."""
    (tmp_path / "audio").mkdir()
    (tmp_path / ESC50_METADATA).parent.mkdir()
    with open(tmp_path / ESC50_METADATA, "w", newline="") as file:
        writer = csv.DictWriter(file, ESC50_COLUMNS)
        writer.writeheader()
        for target, (name, category) in enumerate(FIXTURE_CLIPS.items()):
            shutil.copy(shared_dir / "fixtures/audio" / name, tmp_path / "audio" / name)
            fold, src_file, take, _ = name.split("_")[-1].removesuffix(".wav").split("-")
            writer.writerow({"filename": name, "fold": fold, "target": target, "category": category,
                             "esc10": False, "src_file": src_file, "take": take})  # fmt: skip
    return tmp_path


def test_real_clips_decode_to_their_exact_int16_samples(real_clips_root):
    dm = ESC50DataModule(real_clips_root, fold=1, batch_size=1, num_workers=0, augment=False, progress=False)
    dm.prepare_data()
    dm.setup("fit")
    items = {}
    for dataset in (dm.train_set, dm.val_set, dm.test_set):
        items.update({item["id"]: item for item in (dataset[i] for i in range(len(dataset)))})
    assert set(items) == set(FIXTURE_CLIPS)
    for name, item in items.items():
        expected, rate = sf.read(real_clips_root / "audio" / name, dtype="int16", always_2d=True)
        assert rate == 44100
        assert item["audio"].dtype == torch.float32 and item["audio"].shape == (1, 220500)
        assert torch.equal(item["audio"], torch.from_numpy(expected.T.astype(np.float32)))
        assert item["text"] == class_text(FIXTURE_CLIPS[name])
    assert items["alarm_clock_3-120526-B-37.wav"]["text"] == "clock alarm"


def test_decoder_keeps_int16_values_of_a_real_clip(shared_dir):
    path = shared_dir / "fixtures/audio/cat_3-95694-A-5.wav"
    expected, _ = sf.read(path, dtype="int16")
    decoded = decode_esc50(path)
    assert decoded.dtype == np.int16 and np.array_equal(decoded[0], expected)


def test_class_text_replaces_underscores():
    assert class_text("dog_bark") == "dog bark"
    assert class_text("door_wood_knock") == "door wood knock"


def test_decoder_resamples_and_mixes_down_other_formats(tmp_path):
    t = np.arange(22050 * 6) / 22050
    stereo = np.stack((np.sin(2 * np.pi * 440 * t), np.zeros_like(t)), axis=1) * 0.5
    sf.write(tmp_path / "x.wav", stereo, 22050, subtype="PCM_16")
    decoded = decode_esc50(tmp_path / "x.wav")
    assert decoded.shape == (1, 220500)  # 6 s at 44.1 kHz, cut to 5 s
    assert abs(int(decoded.max()) - 0.25 * 32768) < 200  # the channel mean of a half-scale tone and silence


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    return write_esc50(tmp_path_factory.mktemp("esc50"), clips_per_class=5, classes=4, progress=False)


def test_batches_follow_the_batch_contract(synthetic_root):
    dm = ESC50DataModule(synthetic_root, fold=2, batch_size=4, num_workers=1, val_fraction=0.25, progress=False)
    dm.prepare_data()
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (12, 4, 4)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"audio", "target", "text", "id"}
    assert batch["audio"].shape == (4, 1, 220500) and batch["audio"].dtype == torch.float32
    assert batch["target"].shape == (4,) and batch["target"].dtype == torch.int64
    assert batch["text"] == [dm.class_names[t] for t in batch["target"]]
    assert all(isinstance(i, str) and i.endswith(".wav") for i in batch["id"])
    test_batch = next(iter(dm.test_dataloader()))
    assert all(i.startswith("2-") for i in test_batch["id"])
    # evaluation audio is the stored clip itself, in the int16 value range
    expected, _ = sf.read(synthetic_root / "audio" / test_batch["id"][0], dtype="int16")
    assert torch.equal(test_batch["audio"][0, 0], torch.from_numpy(expected.astype(np.float32)))
