"""Preemption on a real one-node Slurm (tools/slurm-local): docs/finetune-slurm.sbatch submitted with `--requeue`
and `--signal=USR1@...` runs `make finetune-esc50`, and is interrupted mid-run in the two ways a cluster does:

- SLURM's warning (`scancel --signal=USR1`, what `--signal` sends at the time limit minus its seconds): the run saves
  `last.ckpt` at the end of its batch, exits 138, and the job script `scontrol requeue`s the job;
- `scontrol requeue` of the running job (as a preemption): SIGTERM, the same save (exit 143), Slurm requeues it.

Either way the job comes back (SLURM_RESTART_COUNT=1), resumes at the step the signal's save wrote, and ends with the
final weights of an uninterrupted run of the same seed, which runs beside it without Slurm.

The run is the tiny AudioCLIP on a synthetic ESC-50 (4 classes x 4 clips, batch 2: 4 steps an epoch, 3 epochs),
deterministic, one thread. A callback module written next to the test holds the first run at a step and records the
step each process starts training at. Accounting is off without slurmdbd, so the requeue is read from
`scontrol show job` (Restarts=, JobState=) instead of `sacct`.
"""

import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest
import torch
from slurm_cluster import jobs, sbatch, slurm, wait_until

from audioclip.data.synthetic import write_esc50

pytestmark = [pytest.mark.faults, pytest.mark.cluster]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(ROOT / "docs" / "finetune-slurm.sbatch")
PAUSE_STEP = 6  # mid-epoch 1 (batch 2 of 4); the warning's save comes at the end of the next batch
EPOCHS, STEPS_PER_EPOCH = 3, 4

PROBES = '''
import os
import time

from lightning.pytorch.callbacks import Callback


class StartAndPause(Callback):
    """Writes `restart=<SLURM_RESTART_COUNT> step=<global step>` to `path` when training starts; in the first run
    (no restart yet) holds the batch that makes step `step + 1` until a signal arrives, saying PAUSED."""

    def __init__(self, path: str, step: int) -> None:
        self.path, self.step = path, step

    def on_train_start(self, trainer, pl_module):
        with open(self.path, "a") as f:
            f.write(f"restart={os.environ.get('SLURM_RESTART_COUNT', '0')} step={trainer.global_step}\\n")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step != self.step or os.environ.get("SLURM_RESTART_COUNT", "0") != "0":
            return
        print(f"PAUSED step={trainer.global_step}", flush=True)
        end = time.monotonic() + 300
        while time.monotonic() < end and not any(getattr(cb, "pending", None) for cb in trainer.callbacks):
            time.sleep(0.1)
'''


@pytest.fixture(scope="module")
def cluster():
    with slurm() as env:
        yield env


def _fit_args(*extra: str) -> list[str]:
    return [
        "--model.init_args.model", "audioclip-tiny", "--model.init_args.num_classes", "4",
        "--model.init_args.optimizer.init_args.lr", "0.01", "--data.init_args.num_workers", "0",
        "--data.init_args.batch_size", "2", "--data.init_args.val_fraction", "0.2", "--data.init_args.progress",
        "false", "--trainer.accelerator", "cpu", "--trainer.max_epochs", str(EPOCHS), "--trainer.deterministic",
        "true", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--last_checkpoint.every_n_train_steps", "0", *extra,
    ]  # fmt: skip


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


# how the run is interrupted: SLURM's warning before the time limit (what `--signal=USR1@...` sends; the job script
# requeues), or `scontrol requeue` / a preemption (SIGTERM to the job; Slurm requeues it itself); the signal it saves on
INTERRUPTIONS = {
    "warning": (["scancel", "--signal=USR1"], "SIGUSR1"),
    "scontrol-requeue": (["scontrol", "requeue"], "SIGTERM"),
}


@pytest.mark.parametrize("interruption", list(INTERRUPTIONS))
def test_requeued_finetune_resumes_where_it_saved_and_ends_with_the_uninterrupted_weights(
    cluster, tmp_path: Path, interruption: str
):
    command, saved_on = INTERRUPTIONS[interruption]
    data = tmp_path / "esc50"
    write_esc50(data, clips_per_class=4, classes=4, seed=0, progress=False)
    probes = tmp_path / "probes"
    probes.mkdir()
    (probes / "requeue_probes.py").write_text(PROBES)
    starts = tmp_path / "starts.txt"
    probe = ["--trainer.callbacks+", f'{{"class_path": "requeue_probes.StartAndPause", "init_args": '
                                     f'{{"path": "{starts}", "step": {PAUSE_STEP}}}}}']  # fmt: skip
    env = {
        **cluster, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(probes), os.environ.get("PYTHONPATH", "")]),
    }  # fmt: skip
    runs = tmp_path / "runs"
    variables = f"DATA={data} RUNS={runs} FOLD=1 INIT="
    log = tmp_path / "job.log"
    job_id = sbatch(
        {**env, "MAKE_VARS": variables, "ARGS": shlex.join(_fit_args(*probe))},
        "--cpus-per-task=1", "--mem=2G", f"--output={log}", "--signal=USR1@60", SCRIPT, cwd=ROOT,
    )  # fmt: skip
    # the same run without Slurm and without interruption, beside it
    reference = subprocess.Popen(
        ["make", "--no-print-directory", "-C", str(ROOT), "finetune-esc50", f"DATA={data}",
         f"RUNS={tmp_path / 'reference'}", "FOLD=1", "INIT=", f"ARGS={shlex.join(_fit_args())}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        _wait_for_line(log, "PAUSED", timeout=600)
        signalled = subprocess.run([*command, job_id], env=env, capture_output=True, text=True)
        assert signalled.returncode == 0, signalled.stderr
        requeued = _wait_for_requeue(env, job_id, log)
        assert requeued["Restarts"] == "1"
        _start_now(env, job_id)
        finished = wait_until(env, job_id, {"COMPLETED"}, timeout=900)
        out = log.read_text()
        assert finished["JobState"] == "COMPLETED" and finished["Restarts"] == "1", out[-4000:]
        reference_out, _ = reference.communicate(timeout=900)
        assert reference.returncode == 0, reference_out[-4000:]
    finally:
        if reference.poll() is None:
            reference.kill()
        subprocess.run(["scancel", job_id], env=env, capture_output=True)

    run = runs / "finetune-esc50" / "fold1"
    last = run / "checkpoints" / "last.ckpt"
    assert f"{saved_on}: saved {last} at global step {PAUSE_STEP + 1}" in out
    assert "restart 1" in out and f"Restoring states from the checkpoint path at {last}" in out
    # the first process started at 0; the requeued one at the step the signal's save wrote, not earlier
    assert starts.read_text().split() == ["restart=0", "step=0", "restart=1", f"step={PAUSE_STEP + 1}"]
    expected = _weights(tmp_path / "reference" / "finetune-esc50" / "fold1" / "checkpoints" / "last.ckpt")
    actual = torch.load(last, map_location="cpu", weights_only=True)
    assert actual["global_step"] == EPOCHS * STEPS_PER_EPOCH
    assert actual["state_dict"].keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(actual["state_dict"][key], value, rtol=0, atol=1e-6, msg=key)
    assert (run / "test_metrics.json").is_file()


def _wait_for_line(path: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and text in path.read_text():
            return
        time.sleep(0.5)
    seen = path.read_text()[-4000:] if path.is_file() else ""
    pytest.fail(f"no {text!r} in the job's log after {timeout:.0f} s:\n{seen}")


def _start_now(env: dict[str, str], job_id: str) -> None:
    """A requeued job waits about two minutes (Reason=BeginTime); let it start in 5 s instead. Not at once: slurmd
    revokes the first run's job credential when it ends, and a launch within the same second is refused with it
    ("Killing non-startable batch job: Job credential revoked": the job ends FAILED). Slurm 22.05's scontrol names the
    begin time `StartTime=` when updating (`BeginTime=` is refused: "Update of this parameter is not supported")."""
    done = subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now+5"], env=env, capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0, f"{done.stderr.strip()}: {jobs(env, job_id)}"


def _wait_for_requeue(env: dict[str, str], job_id: str, log: Path, timeout: float = 300) -> dict[str, str]:
    """The job once it is back in the queue after a requeue (PENDING with Restarts >= 1)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = jobs(env, job_id)[0]
        if state.get("Restarts", "0") != "0" and state.get("JobState") == "PENDING":
            return state
        if state.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"):
            break
        time.sleep(0.5)
    pytest.fail(f"job {job_id} was not requeued: {jobs(env, job_id)}\n{log.read_text()[-4000:]}")
