"""Fault injection, preemption: real training processes are killed (SIGKILL) or warned (SIGTERM / SIGUSR1).

Each run is a subprocess of `python -m audioclip.cli fit` with the tiny AudioCLIP on a synthetic ESC-50 (4 classes
x 4 clips, batch 2: 4 steps an epoch), deterministic, one thread. A callback module written next to the test
(`pause_at.PauseAt`) holds a run at a chosen step so that the signal lands at a known point.
"""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from audioclip.data.synthetic import write_esc50
from audioclip.reliability import RESUME_KEY, AtomicCheckpointIO

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH = 4
EPOCHS = 3

PAUSE_AT = '''
import time

from lightning.pytorch.callbacks import Callback


class PauseAt(Callback):
    """Holds the run for `seconds` before the batch that makes global step `step + 1`, saying so on stdout."""

    def __init__(self, step: int, seconds: float) -> None:
        self.step, self.seconds = step, seconds

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            print(f"PAUSED epoch={trainer.current_epoch} batch={batch_idx}", flush=True)
            time.sleep(self.seconds)
'''


@pytest.fixture(scope="module")
def esc50_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("esc50")
    write_esc50(root, clips_per_class=4, classes=4, seed=0, progress=False)
    return root


@pytest.fixture(scope="module")
def callbacks_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("callbacks")
    (path / "pause_at.py").write_text(PAUSE_AT)
    return path


def _fit(root: Path, run: Path, callbacks_dir: Path, *extra: str) -> subprocess.Popen:
    args = [
        sys.executable, "-m", "audioclip.cli", "fit",
        "--config", str(ROOT / "conf/trainer.yaml"), "--config", str(ROOT / "conf/demo.yaml"),
        "--data.init_args.root", str(root), "--data.init_args.num_workers", "0",
        "--data.init_args.persistent_workers", "false", "--data.init_args.batch_size", "2",
        "--data.init_args.progress", "false", "--model.init_args.num_classes", "4",
        "--trainer.default_root_dir", str(run), "--trainer.logger.init_args.save_dir", str(run),
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.max_epochs", str(EPOCHS), "--trainer.deterministic", "true",
        "--last_checkpoint.every_n_train_steps", "2",
        *extra,
    ]  # fmt: skip
    # each run starts its own W&B service, as a fresh job would (not the one of an in-process test before)
    env = {
        **{k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"},
        "PYTHONPATH": os.pathsep.join([str(callbacks_dir), os.environ.get("PYTHONPATH", "")]),
        "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": "1",  # the same float reduction order in every run
    }
    return subprocess.Popen(args, cwd=run.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _pause(step: int, seconds: float) -> list[str]:
    spec = f'{{"class_path": "pause_at.PauseAt", "init_args": {{"step": {step}, "seconds": {seconds}}}}}'
    return ["--trainer.callbacks+", spec]


def _wait_for_pause(process: subprocess.Popen) -> tuple[str, list[str]]:
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("PAUSED"):
            return line, lines
    process.wait()
    pytest.fail(f"the run ended (exit {process.returncode}) before pausing:\n{''.join(lines[-40:])}")


def _finish(process: subprocess.Popen, timeout: float = 300) -> str:
    out, _ = process.communicate(timeout=timeout)
    return out


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _wandb_ids(run: Path) -> list[str]:
    return sorted(p.name.rsplit("-", 1)[-1] for p in (run / "wandb").glob("offline-run-*"))


def test_sigkill_mid_epoch_then_resume_ends_with_the_uninterrupted_weights(esc50_root, callbacks_dir, tmp_path):
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    for run in (reference, interrupted):
        run.mkdir()
    # the step-interval checkpoint at step 6 is mid-epoch (epoch 1, 2 of 4 batches); the kill comes during step 7
    victim = _fit(esc50_root, interrupted, callbacks_dir, *_pause(6, 600))
    uninterrupted = _fit(esc50_root, reference, callbacks_dir)
    paused, _ = _wait_for_pause(victim)
    assert paused.strip() == "PAUSED epoch=1 batch=2"
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL

    saved = _load(interrupted / "checkpoints" / "last.ckpt")
    assert (saved["global_step"], saved["epoch"]) == (6, 1)
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "samples": 4}]
    assert not list((interrupted / "checkpoints").glob(".*.tmp-*"))  # nothing half-written

    resumed = _fit(esc50_root, interrupted, callbacks_dir, "--ckpt_path", "last")
    out = _finish(resumed)
    assert resumed.returncode == 0, out[-4000:]
    assert "not resumable" not in out  # Lightning's warning for a loader that would replay the epoch
    out = _finish(uninterrupted)
    assert uninterrupted.returncode == 0, out[-4000:]

    expected, actual = _load(reference / "checkpoints" / "last.ckpt"), _load(interrupted / "checkpoints" / "last.ckpt")
    assert actual["global_step"] == expected["global_step"] == EPOCHS * STEPS_PER_EPOCH
    assert expected["state_dict"].keys() == actual["state_dict"].keys()
    for key, value in expected["state_dict"].items():
        assert torch.equal(actual["state_dict"][key], value), key
    momentum = [s["momentum_buffer"] for s in expected["optimizer_states"][0]["state"].values()]
    resumed_momentum = [s["momentum_buffer"] for s in actual["optimizer_states"][0]["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(momentum, resumed_momentum, strict=True))
    assert actual["lr_schedulers"] == expected["lr_schedulers"]

    # the resumed process continued the killed process's W&B run: two offline directories, one run id
    ids = _wandb_ids(interrupted)
    assert len(ids) == 2 and ids[0] == ids[1] == actual[RESUME_KEY]["wandb_run_id"]


@pytest.mark.parametrize(("signum", "name"), [(signal.SIGTERM, "SIGTERM"), (signal.SIGUSR1, "SIGUSR1")])
def test_warning_signal_saves_last_checkpoint_at_the_batch_end_and_exits(
    signum, name, esc50_root, callbacks_dir, tmp_path
):
    run = tmp_path / "run"
    run.mkdir()
    process = _fit(esc50_root, run, callbacks_dir, *_pause(5, 2), "--last_checkpoint.every_n_train_steps", "0")
    _wait_for_pause(process)
    process.send_signal(signum)
    out = _finish(process)
    assert process.returncode == 128 + signum, out[-4000:]
    assert f"{name}: saved {run / 'checkpoints' / 'last.ckpt'} at global step 6" in out
    saved = _load(run / "checkpoints" / "last.ckpt")
    assert (saved["global_step"], saved["epoch"]) == (6, 1)  # the batch in flight finished, mid-epoch
    assert not (run / "test_metrics.json").exists()  # stopped, not finished


def test_a_checkpoint_write_killed_midway_leaves_the_previous_checkpoint_whole(tmp_path):
    path = tmp_path / "last.ckpt"
    script = textwrap.dedent(f"""
        import os, signal, torch
        from audioclip.reliability import AtomicCheckpointIO

        io = AtomicCheckpointIO()
        io.save_checkpoint({{"global_step": 1, "weight": torch.ones(1000)}}, {str(path)!r})

        def save_and_die(obj, file, *args, **kwargs):
            file.write(b"PK half a checkpoint")
            file.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        torch.save = save_and_die
        io.save_checkpoint({{"global_step": 2, "weight": torch.zeros(1000)}}, {str(path)!r})
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert AtomicCheckpointIO().load_checkpoint(path)["global_step"] == 1
    (stale,) = tmp_path.glob(".last.ckpt.tmp-*")
    assert stale.read_bytes() == b"PK half a checkpoint"
    AtomicCheckpointIO().save_checkpoint({"global_step": 3}, path)
    assert not stale.exists() and _load(path)["global_step"] == 3
