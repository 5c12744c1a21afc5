"""Fault injection at the edges of a training run: a run directory of another run, outputs that cannot be written
(read-only dataset root, read-only or uncreatable runs folder, a full disk), and Lightning's own Trainer switches.

Each run is `audioclip fit` in-process with the tiny AudioCLIP on a synthetic ESC-50 (2 classes x 4 clips), one
epoch of a few steps, W&B offline.
"""

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from audioclip.cli import main
from audioclip.data.cache import CACHE_DIRNAME
from audioclip.data.synthetic import write_esc50

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[2]


def _read_only_mount(monkeypatch, top: Path) -> None:
    """`top` behaves as a read-only mount (EROFS on creating anything below it), also for root, who ignores modes."""
    real_mkdir, real_open = os.mkdir, os.open

    def below(path) -> bool:
        return Path(os.fspath(path)).absolute().is_relative_to(top)

    def mkdir(path, *args, **kwargs):
        if below(path) and not os.path.exists(path):  # an existing name is EEXIST on a read-only mount too
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
        return real_mkdir(path, *args, **kwargs)

    def open_(path, flags, *args, **kwargs):
        if below(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", open_)


@pytest.fixture(scope="module")
def esc50_root(tmp_path_factory):
    return write_esc50(tmp_path_factory.mktemp("esc50"), clips_per_class=4, classes=2, progress=False)


def _fit(esc50_root: Path, run: Path, *extra: str, logger: bool = True) -> int:
    args = [
        "fit", "--config", str(ROOT / "conf/trainer.yaml"), "--config", str(ROOT / "conf/demo.yaml"),
        "--data.init_args.root", str(esc50_root), "--data.init_args.num_workers", "0",
        "--data.init_args.persistent_workers", "false", "--data.init_args.batch_size", "2",
        "--data.init_args.progress", "false", "--model.init_args.num_classes", "2",
        "--trainer.default_root_dir", str(run), "--trainer.max_epochs", "1",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        *(["--trainer.logger.init_args.save_dir", str(run)] if logger else []), *extra,
    ]  # fmt: skip
    try:
        return main(args)
    except SystemExit as done:
        return done.code


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err, err[-3000:]
    (line,) = [line for line in err.splitlines() if line.startswith("audioclip: error:")]
    return line


# ---- item 2: never overwrite another run ----


def test_a_second_run_into_a_run_directory_with_checkpoints_is_refused_without_resume(esc50_root, tmp_path, capsys):
    run = tmp_path / "run"
    assert _fit(esc50_root, run) == 0
    first = {p.name: p.read_bytes() for p in (run / "checkpoints").glob("*.ckpt")}
    assert "last.ckpt" in first
    wandb_runs = sorted((run / "wandb").glob("offline-run-*"))
    capsys.readouterr()

    assert _fit(esc50_root, run) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line == (
        f"audioclip: error: {run}: holds the checkpoints of an earlier run ({len(first)} in {run / 'checkpoints'}); "
        "continue it with RESUME=1 (--ckpt_path last), or choose another run directory (RUNS=, "
        "--trainer.default_root_dir)"
    )
    assert {p.name: p.read_bytes() for p in (run / "checkpoints").glob("*.ckpt")} == first  # untouched
    assert sorted((run / "wandb").glob("offline-run-*")) == wandb_runs  # no second W&B run started

    # RESUME=1 continues it: one more epoch on top of the first
    steps = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert _fit(esc50_root, run, "--ckpt_path", "last", "--trainer.max_epochs", "2") == 0
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2 * steps


# ---- item 3: outputs that cannot be written ----


def test_a_read_only_dataset_root_names_cache_dir_before_anything_starts(esc50_root, tmp_path, capsys, monkeypatch):
    root = tmp_path / "esc50"
    shutil.copytree(esc50_root, root, ignore=shutil.ignore_patterns(CACHE_DIRNAME))
    with monkeypatch.context() as patch:
        _read_only_mount(patch, root)
        assert _fit(root, tmp_path / "run") == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line == (
        f"audioclip: error: {root / CACHE_DIRNAME}: cannot create this folder (Read-only file system); move it with "
        "--data.init_args.cache_dir (default: <root>/.audioclip-cache)"
    )
    assert not (tmp_path / "run" / "wandb").exists()  # checked before the W&B run starts
    # the setting it names works
    assert _fit(root, tmp_path / "run", "--data.init_args.cache_dir", str(tmp_path / "cache")) == 0


@pytest.mark.parametrize("case", ["read-only", "under a file"])
def test_an_unwritable_runs_folder_is_one_line_before_anything_starts(case, esc50_root, tmp_path, capsys, monkeypatch):
    runs = tmp_path / "runs"
    if case == "read-only":
        runs.mkdir()
        _read_only_mount(monkeypatch, runs)
        expected = "cannot create this folder (Read-only file system)"
    else:  # a runs path that cannot exist: a typo through a file, a mount point that is a file
        runs.write_text("not a folder")
        expected = "cannot create this folder (Not a directory)"
    run = runs / "finetune-esc50" / "fold1"
    assert _fit(esc50_root, run) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line == f"audioclip: error: {run}: {expected}; move it with RUNS= or --trainer.default_root_dir"
    assert not (run / "wandb").exists()


def test_a_full_disk_while_saving_a_checkpoint_is_one_line_and_leaves_no_partial_file(
    esc50_root, tmp_path, capsys, monkeypatch
):
    run = tmp_path / "run"
    real_save = torch.save

    def save_until_full(obj, file, *args, **kwargs):
        if isinstance(obj, dict) and "state_dict" in obj and obj.get("global_step") == 2:
            file.write(b"PK part of a checkpoint")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, file, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_full)
    code = _fit(esc50_root, run, "--last_checkpoint.every_n_train_steps", "1")
    assert code == 2
    line = _one_error_line(capsys.readouterr().err)
    last = run / "checkpoints" / "last.ckpt"
    assert line == (
        f"audioclip: error: {last}: could not write the checkpoint (No space left on device); free space or move "
        "the run with RUNS= or --trainer.default_root_dir"
    )
    assert torch.load(last, weights_only=True)["global_step"] == 1  # the previous checkpoint, whole
    assert not list((run / "checkpoints").glob(".*tmp*"))  # no partial file


def _one_line_exit_2(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    return _one_error_line(capsys.readouterr().err)


@pytest.fixture
def audio_folder(tmp_path, shared_dir):
    folder = tmp_path / "media"
    folder.mkdir()
    shutil.copy(shared_dir / "fixtures/audio/cat_3-95694-A-5.wav", folder)
    return folder


def test_index_into_a_read_only_folder_is_one_line_naming_out(
    audio_folder, tiny_checkpoint, tmp_path, capsys, monkeypatch
):
    out_dir = tmp_path / "ro"
    out_dir.mkdir()
    _read_only_mount(monkeypatch, out_dir)
    monkeypatch.setattr("audioclip.inference.load", lambda *a, **k: pytest.fail("model loaded before the check"))
    argv = ["index", str(audio_folder), "--out", str(out_dir / "index.pt"), "--checkpoint", str(tiny_checkpoint)]
    line = _one_line_exit_2(argv, capsys)
    assert line == f"audioclip: error: {out_dir}: not writable (Read-only file system); move it with --out"


def test_index_on_a_full_disk_is_one_line_and_leaves_no_partial_file(
    audio_folder, tiny_checkpoint, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "index.pt"

    def full_disk(obj, file, *args, **kwargs):
        file.write(b"PK part of an index")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    argv = ["index", str(audio_folder), "--out", str(out), "--checkpoint", str(tiny_checkpoint)]
    line = _one_line_exit_2(argv, capsys)
    assert line == f"audioclip: error: {out}: could not be written (No space left on device); move it with --out"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["media"]  # no index.pt, no temporary file


def test_evaluate_into_an_uncreatable_out_is_one_line_before_the_model_loads(
    esc50_root, tiny_checkpoint, tmp_path, capsys, monkeypatch
):
    (tmp_path / "eval").write_text("a file where the results folder should go")
    monkeypatch.setattr("audioclip.inference.load", lambda *a, **k: pytest.fail("model loaded before the check"))
    argv = ["evaluate", "zeroshot", "--dataset", "esc50", "--root", str(esc50_root), "--checkpoint",
            str(tiny_checkpoint), "--out", str(tmp_path / "eval")]  # fmt: skip
    line = _one_line_exit_2(argv, capsys)
    expected = tmp_path / "eval" / "zeroshot-esc50"
    assert line == f"audioclip: error: {expected}: cannot create this folder (Not a directory); move it with --out"


def test_report_into_a_read_only_runs_folder_is_one_line(tmp_path, capsys, monkeypatch):
    runs = tmp_path / "runs"
    (runs / "demo" / "fold1").mkdir(parents=True)
    (runs / "demo" / "fold1" / "test_metrics.json").write_text(json.dumps({"checkpoint": "x", "test/acc": 0.5}))
    _read_only_mount(monkeypatch, runs)
    line = _one_line_exit_2(["report", "--runs", str(runs), "--no-wandb"], capsys)
    assert line == (
        f"audioclip: error: {runs / 'report'}: cannot create this folder (Read-only file system); move it with "
        "--out (make report: RUNS=)"
    )
    assert not (runs / "REPORT.md").exists()


# ---- item 7: Lightning's own switches ----


def test_no_logger_trains_and_tests(esc50_root, tmp_path, capsys):
    run = tmp_path / "run"
    assert _fit(esc50_root, run, "--trainer.logger", "false", logger=False) == 0
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert "test/acc" in json.loads((run / "test_metrics.json").read_text())
    assert not (run / "wandb").exists()


def test_no_checkpointing_writes_no_checkpoint_and_tests_the_last_weights(esc50_root, tmp_path):
    run = tmp_path / "run"
    assert _fit(esc50_root, run, "--trainer.enable_checkpointing", "false") == 0
    assert not list(run.rglob("*.ckpt"))
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert metrics["checkpoint"] == "" and "test/acc" in metrics


def test_fast_dev_run_writes_nothing_and_can_run_twice(esc50_root, tmp_path):
    run = tmp_path / "run"
    for _ in range(2):
        assert _fit(esc50_root, run, "--trainer.fast_dev_run", "true") == 0
    assert not list(run.rglob("*.ckpt"))
    assert not (run / "wandb").exists()


def test_max_steps_and_limit_batches_bound_the_run(esc50_root, tmp_path):
    run = tmp_path / "run"
    args = ["--trainer.max_epochs", "5", "--trainer.max_steps", "3", "--trainer.limit_train_batches", "2",
            "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1"]  # fmt: skip
    assert _fit(esc50_root, run, *args) == 0
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 3  # 2 batches of epoch 0, 1 of epoch 1
    assert "test/acc" in json.loads((run / "test_metrics.json").read_text())


def test_no_validation_batches_trains_and_tests_the_last_weights(esc50_root, tmp_path):
    run = tmp_path / "run"
    assert _fit(esc50_root, run, "--trainer.limit_val_batches", "0") == 0
    assert [p.name for p in (run / "checkpoints").glob("*.ckpt")] == ["last.ckpt"]  # no best: nothing validated
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert metrics["checkpoint"] == "" and "test/acc" in metrics


# ---- item 4: bad audio at inference, as in training ----


def _bad_clips(folder: Path, shared_dir: Path) -> dict[str, Path]:
    import numpy as np
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    clips = {
        "silent": folder / "silent.wav",
        "nan": folder / "nan.wav",
        "truncated": folder / "truncated.wav",
        "empty": folder / "empty.wav",
    }
    sf.write(clips["silent"], np.zeros(44100, dtype=np.int16), 44100)
    sf.write(clips["nan"], np.full(44100, np.nan, dtype=np.float32), 44100, subtype="FLOAT")
    good = (shared_dir / "fixtures/audio/cat_3-95694-A-5.wav").read_bytes()
    clips["truncated"].write_bytes(good[: len(good) // 2])
    clips["empty"].write_bytes(b"")
    return clips


BAD_CLIP_PROBLEMS = {
    "silent": "decoded to digital silence (every sample 0)",
    "nan": "holds NaN or infinite samples",
    "truncated": "truncated: the header declares",
    "empty": "file is empty (0 bytes)",
}


@pytest.mark.parametrize("case", BAD_CLIP_PROBLEMS)
def test_classify_of_a_bad_clip_is_one_line_naming_it(case, tiny_checkpoint, tmp_path, shared_dir, capsys):
    clip = _bad_clips(tmp_path / "clips", shared_dir)[case]
    line = _one_line_exit_2(
        ["classify", str(clip), "--labels", "cat,dog", "--checkpoint", str(tiny_checkpoint)], capsys
    )
    assert line.startswith(f"audioclip: error: {clip}: {BAD_CLIP_PROBLEMS[case]}"), line


def test_classify_of_a_folder_or_with_a_bad_template_is_one_line(tiny_checkpoint, audio_folder, capsys):
    base = ["--labels", "cat,dog", "--checkpoint", str(tiny_checkpoint)]
    line = _one_line_exit_2(["classify", str(audio_folder), *base], capsys)
    assert line == f"audioclip: error: {audio_folder}: is a folder, not an audio file"
    clip = str(next(audio_folder.iterdir()))
    line = _one_line_exit_2(["classify", clip, *base, "--template", "the sound of {label}"], capsys)
    assert line.startswith("audioclip: error: template 'the sound of {label}': not a usable template (KeyError")
    line = _one_line_exit_2(["classify", clip, *base, "--template", "a sound"], capsys)
    assert line == "audioclip: error: template 'a sound' must contain '{}' exactly once, where the class name goes"


def test_index_skips_bad_clips_and_non_utf8_names_counts_and_lists_them(
    tiny_checkpoint, audio_folder, tmp_path, shared_dir, capsys
):
    from audioclip.evaluation import load_index

    clips = _bad_clips(audio_folder, shared_dir)
    odd = Path(os.fsdecode(bytes(audio_folder) + b"/caf\xe9.wav"))  # Latin-1 name, not valid UTF-8
    shutil.copy(shared_dir / "fixtures/audio/cat_3-95694-A-5.wav", odd)
    out = tmp_path / "index.pt"
    assert main(["index", str(audio_folder), "--out", str(out), "--checkpoint", str(tiny_checkpoint)]) == 0
    printed = capsys.readouterr().out
    index = load_index(out)
    assert len(index["paths"]) == 2  # the good clip and the one with the Latin-1 name
    assert f"skipped {len(clips)} unreadable file(s)" in printed
    for case, clip in clips.items():
        assert f"{clip}: {BAD_CLIP_PROBLEMS[case]}" in printed
    assert sorted(index["skipped_files"]) == sorted(str(clip) for clip in clips.values())


def test_a_broken_yaml_config_is_one_line_naming_its_file(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("model:\n  init_args: [unclosed\n")
    line = _one_line_exit_2(["fit", "--config", str(ROOT / "conf/trainer.yaml"), "--config", str(path)], capsys)
    assert line == (
        f"audioclip: error: --config {path}: not valid YAML (line 3, column 1: expected ',' or ']', but got "
        "'<stream end>')"
    )


@pytest.mark.parametrize(("given", "expected"), [("1", 1), ("1.0", 1.0), ("0.5", 0.5), ("3", 3)])
def test_limit_batches_of_one_means_one_batch_not_all_of_them(given, expected):
    """Lightning reads an int as a number of batches and a float as a fraction; `--trainer.limit_val_batches 1` was
    parsed as 1.0 (typing hands back Lightning's `Union[int, float]` as `Union[float, int]`): every batch, silently."""
    from lightning.pytorch.cli import LightningArgumentParser

    from audioclip.tasks.auto_precision import Trainer  # the trainer class `audioclip fit` parses

    parser = LightningArgumentParser()
    parser.add_class_arguments(Trainer, "trainer")
    for stage in ("train", "val", "test", "predict"):
        parsed = parser.parse_args([f"--trainer.limit_{stage}_batches", given]).trainer
        value = getattr(parsed, f"limit_{stage}_batches")
        assert (value, type(value)) == (expected, type(expected)), stage
