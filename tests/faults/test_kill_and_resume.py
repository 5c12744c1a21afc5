"""Fault injection, preemption: real training processes are killed (SIGKILL) or warned (SIGTERM / SIGUSR1 /
SIGINT), the warning sent to the whole process group as `timeout`, SLURM, Kubernetes and a terminal send it.

Each run is a subprocess of `python -m audioclip.cli fit` (or of `make finetune-esc50`) with the tiny AudioCLIP on a
synthetic ESC-50 (4 classes x 4 clips, batch 2: 4 steps an epoch), deterministic, one thread. A callback module
written next to the test (`pause_at.PauseAt`) holds a run at a chosen step so that the signal lands at a known point.
Each run is the leader of its own process group (`start_new_session`), its DataLoader workers members of it.
"""

import os
import shlex
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from audioclip.data.synthetic import write_esc50
from audioclip.tasks.checkpoints import RESUME_KEY, AtomicCheckpointIO

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[2]
STEPS_PER_EPOCH = 4
EPOCHS = 3

PAUSE_AT = '''
import time

from lightning.pytorch.callbacks import Callback


class PauseAt(Callback):
    """Holds the run for `seconds` before the batch that makes global step `step + 1`, saying so on stdout.

    A signal the run acts on ends the pause early, as it would end a long batch (SaveOnSignal notes SIGTERM itself,
    so Lightning's `received_sigterm` stays False)."""

    def __init__(self, step: int, seconds: float) -> None:
        self.step, self.seconds = step, seconds

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            print(f"PAUSED epoch={trainer.current_epoch} batch={batch_idx}", flush=True)
            end = time.monotonic() + self.seconds
            signalled = lambda: any(getattr(cb, "pending", None) for cb in trainer.callbacks)  # noqa: E731
            while time.monotonic() < end and not (trainer.received_sigterm or signalled()):
                time.sleep(0.1)
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


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _kill_leftover_runs():
    """A failed test leaves no training process group (make, python, loader workers) behind."""
    yield
    while _STARTED:
        process = _STARTED.pop()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()


def _restore_sigint() -> None:
    # a job run in the background by a non-interactive shell (CI may run the suite so) starts with SIGINT ignored,
    # which its children inherit and which the run rightly respects; a user's terminal run has the default
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(command: list[str], **kwargs) -> subprocess.Popen:
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        preexec_fn=_restore_sigint, **kwargs,
    )  # fmt: skip
    _STARTED.append(process)
    return process


def _env(callbacks_dir: Path) -> dict[str, str]:
    # each run starts its own W&B service, as a fresh job would (not the one of an in-process test before)
    return {
        **{k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"},
        "PYTHONPATH": os.pathsep.join([str(callbacks_dir), os.environ.get("PYTHONPATH", "")]),
        "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": "1",  # the same float reduction order in every run
    }


def _fit(root: Path, run: Path, callbacks_dir: Path, *extra: str, workers: int = 0) -> subprocess.Popen:
    args = [
        sys.executable, "-m", "audioclip.cli", "fit",
        "--config", str(ROOT / "conf/trainer.yaml"), "--config", str(ROOT / "conf/demo.yaml"),
        "--data.init_args.root", str(root), "--data.init_args.num_workers", str(workers),
        "--data.init_args.persistent_workers", str(workers > 0).lower(), "--data.init_args.batch_size", "2",
        "--data.init_args.progress", "false", "--model.init_args.num_classes", "4",
        "--trainer.default_root_dir", str(run), "--trainer.logger.init_args.save_dir", str(run),
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.max_epochs", str(EPOCHS), "--trainer.deterministic", "true",
        "--last_checkpoint.every_n_train_steps", "2",
        *extra,
    ]  # fmt: skip
    return _start(args, cwd=run.parent, env=_env(callbacks_dir))


def _make_finetune(root: Path, runs: Path, callbacks_dir: Path, *extra: str, resume: bool = False) -> subprocess.Popen:
    """`make finetune-esc50` as a user runs it, the tiny model with two persistent loader workers through ARGS."""
    args = [
        "--model.init_args.model", "audioclip-tiny", "--model.init_args.num_classes", "4",
        "--model.init_args.optimizer.init_args.lr", "0.01", "--model.init_args.scheduler.init_args.gamma", "0.95",
        "--data.init_args.num_workers", "2", "--data.init_args.persistent_workers", "true",
        "--data.init_args.batch_size", "2", "--data.init_args.val_fraction", "0.2",
        "--data.init_args.progress", "false",
        "--trainer.accelerator", "cpu", "--trainer.max_epochs", str(EPOCHS), "--trainer.deterministic", "true",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--last_checkpoint.every_n_train_steps", "2", *extra,
    ]  # fmt: skip
    command = [
        "make", "--no-print-directory", "-C", str(ROOT), "finetune-esc50", f"DATA={root}", f"RUNS={runs}", "FOLD=1",
        "INIT=", f"RESUME={int(resume)}", f"ARGS={shlex.join(args)}",
    ]  # fmt: skip
    return _start(command, env=_env(callbacks_dir))


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
    _assert_equal_training_state(actual, expected)

    # the resumed process continued the killed process's W&B run: two offline directories, one run id
    ids = _wandb_ids(interrupted)
    assert len(ids) == 2 and ids[0] == ids[1] == actual[RESUME_KEY]["wandb_run_id"]


def _assert_equal_training_state(actual: dict, expected: dict) -> None:
    assert actual["global_step"] == expected["global_step"] == EPOCHS * STEPS_PER_EPOCH
    assert expected["state_dict"].keys() == actual["state_dict"].keys()
    for key, value in expected["state_dict"].items():
        assert torch.equal(actual["state_dict"][key], value), key
    momentum = [s["momentum_buffer"] for s in expected["optimizer_states"][0]["state"].values()]
    resumed_momentum = [s["momentum_buffer"] for s in actual["optimizer_states"][0]["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(momentum, resumed_momentum, strict=True))
    assert actual["lr_schedulers"] == expected["lr_schedulers"]


@pytest.mark.parametrize(
    ("signum", "name"), [(signal.SIGTERM, "SIGTERM"), (signal.SIGUSR1, "SIGUSR1"), (signal.SIGINT, "SIGINT")]
)
def test_group_signal_with_loader_workers_saves_last_checkpoint_at_the_batch_end_and_exits(
    signum, name, esc50_root, callbacks_dir, tmp_path
):
    run = tmp_path / "run"
    run.mkdir()
    process = _fit(
        esc50_root, run, callbacks_dir, *_pause(5, 2), "--last_checkpoint.every_n_train_steps", "0", workers=2
    )
    _wait_for_pause(process)
    os.killpg(process.pid, signum)  # the main process and its two persistent DataLoader workers
    out = _finish(process)
    assert "killed by signal" not in out, out[-4000:]
    assert process.returncode == 128 + signum, out[-4000:]
    assert f"{name}: saved {run / 'checkpoints' / 'last.ckpt'} at global step 6" in out
    saved = _load(run / "checkpoints" / "last.ckpt")
    assert (saved["global_step"], saved["epoch"]) == (6, 1)  # the batch in flight finished, mid-epoch
    assert not (run / "test_metrics.json").exists()  # stopped, not finished


def test_a_process_exits_while_workers_that_ignore_sigterm_still_run():
    """Python ends daemonic children at exit with SIGTERM and joins them; loader workers ignore SIGTERM, so a loader
    still referenced at exit (persistent workers, never shut down) once kept a finished test run from exiting."""
    script = textwrap.dedent(
        """
        from torch.utils.data import DataLoader
        from audioclip.data.workers import IgnoreTerminationSignals
        loader = DataLoader(list(range(8)), batch_size=2, num_workers=2, persistent_workers=True,
                            worker_init_fn=IgnoreTerminationSignals())
        batches = iter(loader)
        print(next(batches).tolist(), flush=True)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (0, "[0, 1]\n"), done.stderr[-2000:]


def test_make_finetune_sigterm_to_the_process_group_then_resume_ends_with_the_uninterrupted_weights(
    esc50_root, callbacks_dir, tmp_path
):
    runs, reference_runs = tmp_path / "runs", tmp_path / "reference"
    run = runs / "finetune-esc50" / "fold1"
    victim = _make_finetune(esc50_root, runs, callbacks_dir, *_pause(6, 600))
    uninterrupted = _make_finetune(esc50_root, reference_runs, callbacks_dir)
    paused, _ = _wait_for_pause(victim)
    assert paused.strip() == "PAUSED epoch=1 batch=2"
    # what `timeout -s TERM`, `scancel` and a pod deletion do: make, python and the loader workers all get it
    os.killpg(victim.pid, signal.SIGTERM)
    out = _finish(victim)
    assert victim.returncode != 0
    assert "killed by signal" not in out, out[-4000:]
    assert "Error 143" in out, out[-4000:]  # make's report of the training process's exit code
    assert f"SIGTERM: saved {run / 'checkpoints' / 'last.ckpt'} at global step 7" in out, out[-4000:]
    saved = _load(run / "checkpoints" / "last.ckpt")
    assert (saved["global_step"], saved["epoch"]) == (7, 1)  # mid-epoch: 3 of epoch 1's 4 batches

    resumed = _make_finetune(esc50_root, runs, callbacks_dir, resume=True)
    out = _finish(resumed)
    assert resumed.returncode == 0, out[-4000:]
    assert "not resumable" not in out
    out = _finish(uninterrupted)
    assert uninterrupted.returncode == 0, out[-4000:]
    expected = _load(reference_runs / "finetune-esc50" / "fold1" / "checkpoints" / "last.ckpt")
    _assert_equal_training_state(_load(run / "checkpoints" / "last.ckpt"), expected)


def test_a_checkpoint_write_killed_midway_leaves_the_previous_checkpoint_whole(tmp_path):
    path = tmp_path / "last.ckpt"
    script = textwrap.dedent(f"""
        import os, signal, torch
        from audioclip.tasks.checkpoints import AtomicCheckpointIO

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
