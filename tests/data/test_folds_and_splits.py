"""Official folds on the real ESC-50 and UrbanSound8K metadata: the test fold never leaks into training,
and the validation split is a seeded, class-stratified part of the training folds."""

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audioclip.data import ESC50DataModule
from audioclip.data.esc50 import ESC50_METADATA, read_esc50_metadata
from audioclip.data.splits import split_folds
from audioclip.data.us8k import US8K_METADATA, read_us8k_metadata

US8K_FOLD_SIZES = {1: 873, 2: 888, 3: 925, 4: 990, 5: 936, 6: 823, 7: 838, 8: 806, 9: 816, 10: 837}


@pytest.fixture(scope="module")
def esc50_records(shared_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("esc50-meta")
    (root / ESC50_METADATA).parent.mkdir(parents=True)
    shutil.copy(shared_dir / "fixtures/meta/esc50.csv", root / ESC50_METADATA)
    return read_esc50_metadata(root)


@pytest.fixture(scope="module")
def us8k_records(shared_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("us8k-meta")
    (root / US8K_METADATA).parent.mkdir(parents=True)
    shutil.copy(shared_dir / "fixtures/meta/UrbanSound8K.csv", root / US8K_METADATA)
    return read_us8k_metadata(root)


def check_split(records, fold, val_fraction=0.1, seed=0):
    folds = np.array([r.fold for r in records])
    targets = np.array([r.target for r in records])
    train, val, test = split_folds(folds, targets, fold, val_fraction, seed)
    ids = [r.id for r in records]
    train_ids, val_ids, test_ids = ({ids[i] for i in rows} for rows in (train, val, test))
    assert test_ids == {r.id for r in records if r.fold == fold}
    assert not (test_ids & train_ids) and not (test_ids & val_ids) and not (train_ids & val_ids)
    assert train_ids | val_ids == {r.id for r in records if r.fold != fold}
    # stratified: every class gives round(share) of its training-fold clips to validation
    per_class = Counter(targets[np.concatenate((train, val))])
    val_per_class = Counter(targets[val])
    assert all(val_per_class[c] == round(n * val_fraction) for c, n in per_class.items())
    return train, val, test


@pytest.mark.parametrize("fold", range(1, 6))
def test_esc50_folds_do_not_leak(esc50_records, fold):
    train, val, test = check_split(esc50_records, fold)
    assert (len(train), len(val), len(test)) == (1450, 150, 400)  # 50 classes x (32 - 3), 50 x 3, 400


@pytest.mark.parametrize("fold", range(1, 11))
def test_us8k_folds_do_not_leak(us8k_records, fold):
    _, _, test = check_split(us8k_records, fold)
    assert len(test) == US8K_FOLD_SIZES[fold]


def test_validation_split_is_seeded(esc50_records):
    _, val_a, _ = check_split(esc50_records, 1, seed=0)
    _, val_b, _ = check_split(esc50_records, 1, seed=0)
    _, val_c, _ = check_split(esc50_records, 1, seed=1)
    assert np.array_equal(val_a, val_b) and not np.array_equal(val_a, val_c)


def test_esc50_datamodule_splits_on_real_metadata(shared_dir, tmp_path):
    """End to end on the real esc50.csv with a tiny stand-in WAV for each of its 2,000 rows."""
    root = tmp_path / "esc50"
    (root / "audio").mkdir(parents=True)
    (root / ESC50_METADATA).parent.mkdir()
    shutil.copy(shared_dir / "fixtures/meta/esc50.csv", root / ESC50_METADATA)
    folds = {r.id: r.fold for r in read_esc50_metadata(root)}
    for name in folds:
        sf.write(root / "audio" / name, np.full(64, 7, dtype=np.int16), 44100, subtype="PCM_16")
    dm = ESC50DataModule(root, fold=3, batch_size=4, num_workers=0, progress=False)
    dm.prepare_data()
    dm.setup("fit")
    assert {folds[i] for i in dm.test_set.ids} == {3} and len(dm.test_set) == 400
    assert 3 not in {folds[i] for i in dm.train_set.ids + dm.val_set.ids}
    assert (len(dm.train_set), len(dm.val_set)) == (1450, 150)
    assert dm.class_names[0] == "dog" and dm.class_names[11] == "sea waves" and len(dm.class_names) == 50
    batch = next(iter(dm.test_dataloader()))
    assert batch["audio"].shape == (4, 1, 220500)
    assert all(Path(root / "audio" / i).exists() for i in batch["id"])


def test_a_split_with_nothing_outside_the_test_fold_is_empty_index_arrays():
    train, val, test = split_folds(np.array([2, 2, 2]), np.array([0, 1, 1]), test_fold=2, val_fraction=0.5, seed=0)
    assert test.tolist() == [0, 1, 2] and len(train) == len(val) == 0
    assert train.dtype == val.dtype == np.int64  # usable as row indices
