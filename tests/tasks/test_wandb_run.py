"""What a W&B user sees of a training run: a run directory that holds all its media, and runs organised for filtering.

One tiny offline fit (2 epochs, synthetic ESC-50 layout); the W&B run is read as a user would, with
`wandb leet inspect` (tests/wandb_offline.py), and from a copy of the run directory in another place.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import soundfile as sf
from wandb_offline import wandb_records, wandb_run

from audioclip.data.audioset import AudioSetDataModule
from audioclip.data.synthetic import write_esc50
from audioclip.outputs import STAGING_ENV
from audioclip.tasks.cli import run_lightning_cli
from audioclip.tasks.wandb_run import run_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A finished 2-epoch run in `<tmp>/runs/finetune-esc50/fold1` (the Makefile's layout)."""
    data = tmp_path_factory.mktemp("esc50")
    write_esc50(data, clips_per_class=4, classes=4, seed=0)
    run = tmp_path_factory.mktemp("runs") / "finetune-esc50" / "fold1"
    run_lightning_cli([
        "fit", "--config", str(ROOT / "conf/trainer.yaml"), "--config", str(ROOT / "conf/demo.yaml"),
        "--data.init_args.root", str(data), "--data.init_args.num_workers", "0",
        "--data.init_args.persistent_workers", "false", "--data.init_args.batch_size", "4",
        "--trainer.max_epochs", "2", "--trainer.default_root_dir", str(run),
        "--trainer.logger.init_args.save_dir", str(run), "--trainer.enable_progress_bar", "false",
    ])  # fmt: skip
    return run


def test_the_run_is_organised_by_phase_group_and_tags(fitted):
    (record,) = [r["run"] for r in wandb_records(fitted) if r.get("type") == "run"]
    assert record["job_type"] == "finetune-esc50"
    assert record["run_group"] == "finetune-esc50-folds"
    expected = {"dataset:esc50", "data:synthetic", "model:audioclip-tiny", "variant:other", "protocol:honest"}
    assert expected <= set(record["tags"])


def test_the_summary_holds_the_best_validation_accuracy_and_the_last(fitted):
    history = [r["history"] for r in wandb_records(fitted) if r.get("type") == "history"]
    values = [h["item"]["val/acc"] for h in history if "val/acc" in h["item"]]
    assert len(values) == 2  # one per epoch
    summary = wandb_run(fitted)["summary"]["val/acc"]
    assert summary["max"] == pytest.approx(max(values)) and summary["last"] == pytest.approx(values[-1])


def test_a_copied_run_directory_holds_every_logged_media_file(fitted, tmp_path):
    """The table media (audio of the test predictions, the tables themselves) are staged inside the run directory,
    so a copy of `runs/<phase>/<run>/` elsewhere has every file the W&B records name, and the audio reads back."""
    entries = [
        entry
        for r in wandb_records(fitted)
        if r.get("type") == "artifact"
        for entry in r["artifact"]["manifest"]["contents"]
    ]
    assert any(e["path"].endswith(".wav") for e in entries) and any(e["path"].endswith(".table.json") for e in entries)
    run = fitted.resolve()
    for entry in entries:
        assert Path(entry["local_path"]).is_relative_to(run), entry["local_path"]
    copy = tmp_path / "elsewhere" / "fold1"
    shutil.copytree(fitted, copy)
    audio = 0
    for entry in entries:
        moved = copy / Path(entry["local_path"]).relative_to(run)
        assert moved.stat().st_size == int(entry["size"]), entry["path"]
        if entry["path"].endswith(".wav"):
            samples, rate = sf.read(moved)
            assert rate == 44100 and len(samples) > 0
            audio += 1
    assert audio >= 4  # one playable clip per test prediction shown


def test_a_group_job_type_or_tags_the_user_set_are_kept(tmp_path, monkeypatch):
    monkeypatch.delenv(STAGING_ENV, raising=False)
    configured = {"save_dir": str(tmp_path), "group": "cv-esc50-mine", "job_type": "sweep", "tags": ["mine"]}
    model = SimpleNamespace(hparams=SimpleNamespace(model="audioclip-tiny", multilabel=False), produces=None,
                            init_lineage={"variant": "full"})  # fmt: skip
    datamodule = SimpleNamespace()
    init = run_settings(configured, model, datamodule)
    assert init["group"] == "cv-esc50-mine" and init["job_type"] == "sweep"
    assert init["tags"][0] == "mine" and "variant:full" in init["tags"]
    assert os.environ[STAGING_ENV] == str((tmp_path / "wandb").resolve())


@pytest.mark.parametrize("target", ["cv-esc50", "cv-us8k-audio-head"])
def test_every_fold_of_one_cross_validation_goes_to_one_group(target):
    """`make cv-*` (dry run) passes one group, named after the target and its start, to every fold's run."""
    out = subprocess.run(["make", "-n", target, "FOLDS=1 4"], cwd=ROOT, capture_output=True, text=True, check=True)
    groups = re.findall(r"--trainer\.logger\.init_args\.group (\S+)", out.stdout)
    assert len(groups) == 2 and groups[0] == groups[1] and groups[0].startswith(f"{target}-")
    named = subprocess.run(["make", "-n", target, "FOLDS=1 4", "GROUP=mine"], cwd=ROOT, capture_output=True,
                           text=True, check=True)  # fmt: skip
    assert re.findall(r"--trainer\.logger\.init_args\.group (\S+)", named.stdout) == ["mine", "mine"]


def test_the_audioset_stages_of_one_runs_folder_share_a_group(tmp_path, monkeypatch):
    """pretrain-audio, train-partial and train-full write to runs/<phase>/main: one experiment per runs folder."""
    monkeypatch.delenv(STAGING_ENV, raising=False)
    datamodule = AudioSetDataModule(train_dir=str(tmp_path / "shards" / "train"), frames=False)
    groups, jobs = set(), []
    for phase, kind in [("pretrain-audio", "AudioPretrainModule"), ("train-partial", "PartialTrainingModule"),
                        ("train-full", "FullTrainingModule")]:  # fmt: skip
        model = type(kind, (), {"hparams": SimpleNamespace(model="m", multilabel=True), "produces": None,
                                "init_lineage": {"variant": "other"}})()  # fmt: skip
        init = run_settings({"save_dir": str(tmp_path / "my-runs" / phase / "main")}, model, datamodule)
        groups.add(init["group"])
        jobs.append(init["job_type"])
    assert groups == {"audioset-my-runs"} and jobs == ["pretrain-audio", "train-partial", "train-full"]
