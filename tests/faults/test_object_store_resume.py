"""A training run on an object store: `make pretrain-audio SHARDS=s3://... RUNS=s3://...` against moto's S3 server
over HTTP (reached through AWS_ENDPOINT_URL and credentials in the environment), killed and resumed.

The shards come from `make data-audioset AUDIOSET_ROOT=s3://...`; the run streams them with two loader workers and
keeps its checkpoints and `test_metrics.json` in the bucket. It is killed (SIGKILL to its process group) in the
middle of the epoch and resumed by the same command with RESUME=1, which finds `last.ckpt` in the bucket: every
training clip of the epoch is then trained on exactly once, the same clips the epoch holds without the kill.
A callback module written next to the test records each trained batch's clips and holds the first run at a step.
"""

import json
import os
import shlex
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from s3_server import running_s3

from audioclip.data.audioset.testmedia import write_test_set

pytestmark = [pytest.mark.faults, pytest.mark.cluster]

ROOT = Path(__file__).resolve().parents[2]

CALLBACKS = '''
import json
import time

from lightning.pytorch.callbacks import Callback


class RecordClips(Callback):
    """Appends the clips of every trained batch, with the step they made, to `path` (one JSON line a batch)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        record = {"step": trainer.global_step, "epoch": trainer.current_epoch, "ids": batch["id"]}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\\n")


class PauseAt(Callback):
    """Holds the run before the batch that makes global step `step + 1`, saying PAUSED on stdout."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            print(f"PAUSED step={trainer.global_step}", flush=True)
            time.sleep(600)
'''

SETTINGS = {"batch_size": 2, "num_workers": 2, "clip_seconds": 1.0, "frames": False}


def _callback(spec: str, **init_args) -> list[str]:
    return ["--trainer.callbacks+", json.dumps({"class_path": spec, "init_args": init_args})]


def _pretrain(runs: str, cache: Path, *extra: str) -> list[str]:
    args = [
        "--model.init_args.model", "esresnext-fbsp-tiny",
        "--data.init_args.batch_size", str(SETTINGS["batch_size"]),
        "--data.init_args.num_workers", str(SETTINGS["num_workers"]),
        "--data.init_args.clip_seconds", str(SETTINGS["clip_seconds"]), "--data.init_args.cache_dir", str(cache),
        "--data.init_args.test_dir", "s3://bucket/audioset/shards/val",
        "--trainer.max_epochs", "1", "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--last_checkpoint.every_n_train_steps", "2", *extra,
    ]  # fmt: skip
    return [
        "make", "--no-print-directory", "-C", str(ROOT), "pretrain-audio", "SHARDS=s3://bucket/audioset/shards",
        f"RUNS={runs}", "RESUME=1", "INIT=", f"ARGS={shlex.join(args)}",
    ]  # fmt: skip


def _epoch_clips(env: dict[str, str], cache: Path) -> list[str]:
    """The clips one uninterrupted epoch trains on: the training loader with the run's settings, iterated here."""
    from audioclip.data.audioset import AudioSetDataModule

    dm = AudioSetDataModule(train_dir="s3://bucket/audioset/shards/train", cache_dir=str(cache), **SETTINGS)
    dm.setup("fit")
    return [clip for batch in dm.train_dataloader() for clip in batch["id"]]


def test_pretrain_audio_from_s3_killed_mid_epoch_resumes_from_the_bucket_with_every_clip_once(tmp_path: Path):
    callbacks = tmp_path / "callbacks"
    callbacks.mkdir()
    (callbacks / "s3_run_probes.py").write_text(CALLBACKS)
    videos, segments = write_test_set(tmp_path / "media", 16)  # 14 clips that decode
    trained = tmp_path / "trained.jsonl"
    with running_s3() as s3:
        s3.create_bucket("bucket")
        env = {
            **os.environ, **s3.env, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "WANDB_DIR": str(tmp_path),
            "PYTHONPATH": os.pathsep.join([str(callbacks), os.environ.get("PYTHONPATH", "")]),
        }  # fmt: skip
        prepare = ["make", "--no-print-directory", "-C", str(ROOT), "data-audioset", "AUDIOSET_ROOT=s3://bucket/audioset",
                   f"AUDIOSET_SEGMENTS={segments}", f"AUDIOSET_CLIPS={videos}", "AUDIOSET_VAL_FRACTION=0.25",
                   f"ARGS=--workers 1 --work {tmp_path / 'work'}"]  # fmt: skip
        done = subprocess.run(prepare, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]

        record = _callback("s3_run_probes.RecordClips", path=str(trained))
        # LitData resumes a loader only with the chunk cache at the same path (it checks): one for both runs
        cache = tmp_path / "cache"
        first = subprocess.Popen(
            _pretrain("s3://bucket/runs", cache, *record, *_callback("s3_run_probes.PauseAt", step=2)),
            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        try:
            lines = []
            for line in first.stdout:
                lines.append(line)
                if line.startswith("PAUSED"):
                    break
            else:
                pytest.fail("the run ended before the pause:\n" + "".join(lines[-40:]))
        finally:
            os.killpg(first.pid, signal.SIGKILL)  # the training process, its loader workers, make
            first.communicate(timeout=60)
        run = "runs/pretrain-audio/main"
        assert f"{run}/checkpoints/last.ckpt" in s3.keys("bucket", run)
        (tmp_path / "killed.ckpt").write_bytes(s3.read("bucket", f"{run}/checkpoints/last.ckpt"))
        assert torch.load(tmp_path / "killed.ckpt", map_location="cpu", weights_only=True)["global_step"] == 2

        second = subprocess.run(
            _pretrain("s3://bucket/runs", cache, *record), env=env, cwd=tmp_path,
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert second.returncode == 0, (second.stdout + second.stderr)[-4000:]
        assert "s3://bucket/runs/pretrain-audio/main/checkpoints/last.ckpt" in second.stdout + second.stderr
        metrics = json.loads(s3.read("bucket", f"{run}/test_metrics.json"))
        assert "test/map" in metrics and metrics["checkpoint"].startswith(f"s3://bucket/{run}/checkpoints/best-")
        expected = _epoch_clips(env, tmp_path / "cache-reference")

    batches = [json.loads(line) for line in trained.read_text().splitlines()]
    steps = [b["step"] for b in batches]
    assert steps == list(range(1, len(batches) + 1)) and len(batches) >= 4  # killed after 2, resumed at 3
    clips = [clip for b in batches for clip in b["ids"]]
    assert len(clips) == len(set(clips)), "a clip was trained on twice in the epoch"
    assert sorted(clips) == sorted(expected), "the resumed epoch skipped or added clips"
    assert not list(tmp_path.rglob("s3:*"))
    assert (tmp_path / "pretrain-audio-main").is_dir()  # W&B's local side of the run: in WANDB_DIR, not the repository
