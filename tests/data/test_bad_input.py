"""Bad input fails before training with one line naming the path and the problem, or is skipped and logged."""

import logging
import shutil
from types import SimpleNamespace

import pytest

from audioclip.data import (
    BadFileError,
    DatasetNotFoundError,
    ESC50DataModule,
    MetadataError,
    MissingFileError,
    US8KDataModule,
    per_device_batch_size,
)
from audioclip.data.esc50 import ESC50_METADATA
from audioclip.data.synthetic import write_esc50, write_us8k


@pytest.fixture(scope="module")
def pristine_esc50(tmp_path_factory):
    return write_esc50(tmp_path_factory.mktemp("pristine"), clips_per_class=5, classes=2, progress=False)


@pytest.fixture
def esc50_root(pristine_esc50, tmp_path):
    return shutil.copytree(pristine_esc50, tmp_path / "esc50")


def datamodule(root, **kwargs):
    return ESC50DataModule(root, **{"fold": 1, "batch_size": 2, "num_workers": 0, "progress": False, **kwargs})


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("step", ["prepare_data", "setup"])
def test_missing_root(tmp_path, step):
    with pytest.raises(DatasetNotFoundError) as error:
        getattr(datamodule(tmp_path / "nowhere"), step)()
    assert f"{tmp_path / 'nowhere'}: ESC-50 root does not exist" in one_line(error)


def test_missing_metadata_file_and_audio_folder(esc50_root):
    (esc50_root / ESC50_METADATA).unlink()
    with pytest.raises(DatasetNotFoundError, match=f"{esc50_root / ESC50_METADATA}: metadata file does not exist"):
        datamodule(esc50_root).prepare_data()
    shutil.rmtree(esc50_root / "audio")
    with pytest.raises(DatasetNotFoundError, match=f"{esc50_root / 'audio'}: ESC-50 audio folder does not exist"):
        datamodule(esc50_root).prepare_data()


def test_metadata_without_expected_columns(esc50_root):
    path = esc50_root / ESC50_METADATA
    path.write_text(path.read_text().replace("category", "label", 1))
    with pytest.raises(MetadataError) as error:
        datamodule(esc50_root).prepare_data()
    assert one_line(error).startswith(f"{path}: missing column(s) ['category']")


def test_metadata_fold_out_of_range(esc50_root):
    path = esc50_root / ESC50_METADATA
    lines = path.read_text().splitlines()
    fields = lines[3].split(",")
    fields[1] = "6"  # the fold column
    lines[3] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(MetadataError, match=f"{path}: line 4: column 'fold' must be in 1..5, got 6"):
        datamodule(esc50_root).prepare_data()


@pytest.mark.parametrize(("module", "fold"), [(ESC50DataModule, 0), (ESC50DataModule, 6), (US8KDataModule, 11)])
def test_fold_argument_out_of_range(tmp_path, module, fold):
    with pytest.raises(ValueError, match=f"fold must be in 1..{module.num_folds} .* got {fold}"):
        module(tmp_path, fold=fold)


def spoil(path, how):
    """Make a listed audio file missing, truncated, empty or not audio."""
    if how == "missing":
        path.unlink()
    elif how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    else:
        path.write_text("this is a text file, not audio\n" * 10)


PROBLEMS = {
    "missing": "file is missing",
    "truncated": "truncated: the header declares",
    "empty": "file is empty",
    "not audio": "not a readable audio file",
}


@pytest.mark.parametrize("how", PROBLEMS)
def test_bad_listed_file_stops_prepare_data(esc50_root, how):
    path = sorted((esc50_root / "audio").glob("*.wav"))[3]
    spoil(path, how)
    with pytest.raises(BadFileError) as error:
        datamodule(esc50_root).prepare_data()
    assert one_line(error).startswith(f"{path}: {PROBLEMS[how]}")
    assert "on_bad_file='skip'" in str(error.value)
    assert isinstance(error.value, FileNotFoundError) == (how == "missing")
    # a warm cache remembers the problem: the next start reports it again without decoding
    with pytest.raises(BadFileError, match=PROBLEMS[how]):
        datamodule(esc50_root).setup("fit")


def test_several_bad_files_are_counted(esc50_root):
    paths = sorted((esc50_root / "audio").glob("*.wav"))
    spoil(paths[0], "empty")
    spoil(paths[5], "missing")
    with pytest.raises(BadFileError, match=r"\(1 more bad file\(s\) in ESC-50\)"):
        datamodule(esc50_root).prepare_data()


def test_skip_leaves_bad_files_out_and_logs_them(esc50_root, caplog):
    paths = sorted((esc50_root / "audio").glob("*.wav"))
    for path, how in zip(paths, PROBLEMS, strict=False):
        spoil(path, how)
    dm = datamodule(esc50_root, on_bad_file="skip")
    dm.prepare_data()
    with caplog.at_level(logging.WARNING, logger="audioclip.data.folds"):
        dm.setup("fit")
    assert sorted(dm.skipped_files) == sorted(path.name for path in paths[:4])
    kept = set(dm.train_set.ids + dm.val_set.ids + dm.test_set.ids)
    assert len(kept) == 6 and not kept & set(dm.skipped_files)
    (record,) = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert record.levelno == logging.WARNING and "skipped 4 bad file(s)" in record.getMessage()
    assert all(path.name in record.getMessage() for path in paths[:4])


def test_us8k_bad_file_names_its_fold_folder(tmp_path):
    root = write_us8k(tmp_path / "us8k", clips_per_class=2, classes=1, progress=False)
    path = root / "audio" / "fold2" / "200001-0-0-1.wav"
    spoil(path, "not audio")
    with pytest.raises(BadFileError, match=f"{path}: not a readable audio file"):
        US8KDataModule(root, fold=1, batch_size=1, num_workers=0, val_fraction=0.5, progress=False).prepare_data()


def test_global_batch_must_divide_by_world_size(pristine_esc50):
    assert per_device_batch_size(64, 4) == 16
    with pytest.raises(ValueError, match=r"batch_size=64 .*\(world size 3\)"):
        per_device_batch_size(64, 3)
    dm = datamodule(pristine_esc50, batch_size=6)
    dm.trainer = SimpleNamespace(world_size=4)
    with pytest.raises(ValueError, match="batch_size=6 is the global batch size"):
        dm.setup("fit")
    dm.trainer = SimpleNamespace(world_size=3)
    dm.setup("fit")
    assert dm.train_dataloader().batch_size == 2


def test_invalid_arguments(tmp_path):
    with pytest.raises(ValueError, match="on_bad_file"):
        datamodule(tmp_path, on_bad_file="ignore")
    with pytest.raises(ValueError, match="val_fraction"):
        datamodule(tmp_path, val_fraction=0.0)
    with pytest.raises(ValueError, match="batch_size"):
        datamodule(tmp_path, batch_size=0)


def test_missing_file_error_is_both_kinds():
    error = MissingFileError("/x/a.wav")
    assert isinstance(error, ValueError) and isinstance(error, FileNotFoundError)
    assert str(error) == "/x/a.wav: file is missing"
