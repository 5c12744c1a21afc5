"""The user's front door: `make finetune-esc50 FOLD=k DATA=...` end to end, and the cross-validation table."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from audioclip.data.synthetic import write_esc50
from audioclip.tasks.crossval import main as crossval

ROOT = Path(__file__).resolve().parents[2]


def _make(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    # the Makefile's venv is the one running the tests
    venv = str(Path(sys.executable).parent.parent)
    return subprocess.run(
        ["make", "--no-print-directory", f"VENV={venv}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "WANDB_MODE": "offline", **(env or {})},
        timeout=600,
    )


def test_finetune_esc50_target_runs_end_to_end_on_a_synthetic_root(tmp_path):
    data = tmp_path / "esc50"
    write_esc50(data, clips_per_class=4, classes=4, seed=0)
    runs = tmp_path / "runs"
    args = (
        "--model.init_args.model audioclip-tiny --trainer.max_epochs 1 --trainer.accelerator cpu "
        "--trainer.devices 1 --data.init_args.batch_size 4 --data.init_args.num_workers 0 "
        "--trainer.enable_progress_bar false"
    )
    done = _make("finetune-esc50", "FOLD=3", f"DATA={data}", "INIT=", f"RUNS={runs}", f"ARGS={args}")
    assert done.returncode == 0, done.stderr[-3000:]
    run = runs / "finetune-esc50" / "fold3"
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    metrics = json.loads((run / "test_metrics.json").read_text())
    # the target's wiring: fold 3 is the test split of 4 clips (one per class); the accuracy that training
    # reaches is asserted through the same configuration in tests/tasks/test_learning.py
    assert metrics["test/acc"] * 4 == pytest.approx(round(metrics["test/acc"] * 4))
    assert "fold: 3" in (run / "config.yaml").read_text()


def test_finetune_without_official_weights_says_how_to_get_them(tmp_path):
    data = tmp_path / "esc50"
    write_esc50(data, clips_per_class=2, classes=2, seed=0)
    done = _make(
        "finetune-esc50",
        "FOLD=1",
        f"DATA={data}",
        f"RUNS={tmp_path / 'runs'}",
        env={"AUDIOCLIP_CACHE": str(tmp_path / "empty-cache")},
    )
    assert done.returncode != 0
    assert "make weights" in done.stderr


def test_crossval_table_has_every_fold_and_mean_std(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    phase = tmp_path / "finetune-esc50"
    for fold, acc in zip(range(1, 6), (0.80, 0.90, 0.85, 0.95, 0.75), strict=True):
        (phase / f"fold{fold}").mkdir(parents=True)
        record = {"test/acc": acc, "dataset": "esc50", "test_fold": fold}
        (phase / f"fold{fold}" / "test_metrics.json").write_text(json.dumps(record))
    assert crossval([str(phase)]) == 0
    lines = (phase / "cv.csv").read_text().splitlines()
    assert lines[0] == "fold,test_acc" and lines[1:6] == ["1,0.8000", "2,0.9000", "3,0.8500", "4,0.9500", "5,0.7500"]
    assert lines[6] == "mean,0.8500" and lines[7] == "std,0.0791"
    assert "85.00% ± 7.91%" in (phase / "cv.md").read_text()


def test_crossval_takes_each_fold_from_the_metrics_file_not_the_folder_name(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    for name, fold, acc in (("first-try", 2, 0.5), ("fold1", 3, 0.7)):
        (tmp_path / name).mkdir()
        record = {"test/acc": acc, "dataset": "esc50", "test_fold": fold}
        (tmp_path / name / "test_metrics.json").write_text(json.dumps(record))
    assert crossval([str(tmp_path)]) == 0
    assert (tmp_path / "cv.csv").read_text().splitlines()[1:3] == ["2,0.5000", "3,0.7000"]


def test_crossval_refuses_a_run_without_a_fold_and_two_runs_of_one_fold(tmp_path):
    (tmp_path / "fold1").mkdir()
    (tmp_path / "fold1" / "test_metrics.json").write_text(json.dumps({"test/acc": 0.5}))
    with pytest.raises(ValueError, match="fold1/test_metrics.json: records no test_fold"):
        crossval([str(tmp_path)])
    for name in ("fold1", "again"):
        (tmp_path / name).mkdir(exist_ok=True)
        record = {"test/acc": 0.5, "dataset": "esc50", "test_fold": 1}
        (tmp_path / name / "test_metrics.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="fold 1 again"):
        crossval([str(tmp_path)])


def test_crossval_without_runs_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no fold"):
        crossval([str(tmp_path)])
