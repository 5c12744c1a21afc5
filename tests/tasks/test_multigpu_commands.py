"""The users' own commands on 2 ranks: `make <phase> GPUS=2` and `torchrun ... audioclip evaluate`.

Each test runs the command a user types, as a subprocess, on 2 CPU ranks (gloo, Lightning's `ddp` strategy, which
starts rank 1 by re-running the command), with the W&B offline logger on, tiny models and synthetic data. One loader
worker per rank: under a process group it starts from a fork server (`audioclip.data.workers`), since a worker forked
from a rank running gloo's threads hung once in a rehearsal of CI. No `find_unused_parameters`: a parameter that
takes no part in the loss stops DDP at its second step, so every phase runs at least two steps here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from wandb_offline import wandb_run

from audioclip.data.synthetic import write_caption_manifest, write_esc50, write_labels_manifest, write_us8k
from audioclip.models import create_model

pytestmark = pytest.mark.ddp

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent
TINY = "--trainer.accelerator cpu --trainer.enable_progress_bar false --trainer.strategy ddp"


def _run(cmd: list[str], env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd,
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", **(env or {})},
        timeout=timeout,
    )


def _make(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return _run(["make", "--no-print-directory", f"VENV={VENV}", *args], env)


def _ok(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    # nothing crashed on another rank (Lightning prefixes rank 1's output), nothing hung (the timeout)
    assert "Traceback" not in done.stderr, done.stderr[-4000:]


@pytest.fixture(scope="module")
def esc50(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("esc50") / "esc50"
    write_esc50(root, clips_per_class=6, classes=4, seed=0)
    return root


def _finetune_args(batch: int = 4, extra: str = "") -> str:
    return (
        f"--model.init_args.model audioclip-tiny --trainer.max_epochs 2 --data.init_args.batch_size {batch} "
        f"--data.init_args.num_workers 1 --data.init_args.val_fraction 0.2 {TINY} {extra}"
    )


def test_finetune_esc50_on_two_ranks_trains_tests_and_logs_once(esc50: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    # ChannelsLast under DDP: the model must be converted before DDP builds its gradient buckets, else every
    # step copies them ("grad strides do not match bucket view strides")
    extra = "--trainer.precision bf16-mixed --trainer.callbacks+=audioclip.tasks.ChannelsLast"
    done = _make("finetune-esc50", "FOLD=2", f"DATA={esc50}", "INIT=", f"RUNS={runs}", "GPUS=2",
                 f"ARGS={_finetune_args(extra=extra)}")  # fmt: skip
    _ok(done)
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in done.stdout + done.stderr  # two ranks really ran
    assert "grad strides do not match" not in done.stderr
    run = runs / "finetune-esc50" / "fold2"
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert set(metrics) >= {"test/acc", "checkpoint"}
    # one W&B run (rank 0's), holding the resolved config and the training curve
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1
    summary = wandb_run(run)
    assert summary["config"]["config"]["fit"]["data"]["init_args"]["fold"] == 2
    assert summary["summary"]["trainer/global_step"] >= 4  # 2 epochs x >= 2 steps: past DDP's second step


def test_finetune_us8k_on_two_ranks(tmp_path: Path) -> None:
    data = tmp_path / "us8k"
    write_us8k(data, clips_per_class=4, seed=0)
    done = _make("finetune-us8k", "FOLD=1", f"DATA={data}", "INIT=", f"RUNS={tmp_path / 'runs'}", "GPUS=2",
                 f"ARGS={_finetune_args()}")  # fmt: skip
    _ok(done)
    assert (tmp_path / "runs" / "finetune-us8k" / "fold1" / "test_metrics.json").is_file()


def test_audio_head_finetune_on_two_ranks(esc50: Path, tmp_path: Path) -> None:
    torch.manual_seed(3)
    head = tmp_path / "esrnxfbsp-tiny.pt"  # a 527-class tiny audio head, the layout of ESRNXFBSP.pt
    torch.save(create_model("esresnext-fbsp-tiny").state_dict(), head)
    args = _finetune_args(extra="--model.init_args.num_classes 4").replace("audioclip-tiny", "esresnext-fbsp-tiny")
    done = _make("finetune-esc50-audio-head", "FOLD=1", f"DATA={esc50}", f"INIT_AUDIO_HEAD={head}",
                 f"RUNS={tmp_path / 'runs'}", "GPUS=2", f"ARGS={args}")  # fmt: skip
    _ok(done)
    metrics = json.loads((tmp_path / "runs" / "finetune-esc50-audio-head" / "fold1" / "test_metrics.json").read_text())
    assert metrics["dataset"] == "esc50" and "test/acc" in metrics


def test_cross_validation_on_two_ranks_runs_each_fold_and_tabulates(esc50: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    done = _make("cv-esc50", "FOLDS=1 4", f"DATA={esc50}", "INIT=", f"RUNS={runs}", "GPUS=2",
                 f"ARGS={_finetune_args()}")  # fmt: skip
    _ok(done)
    table = (runs / "finetune-esc50" / "cv.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in table[1:3]] == ["1", "4"]


def test_resume_on_two_ranks_continues_on_every_rank(esc50: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    first = _make("finetune-esc50", "FOLD=1", f"DATA={esc50}", "INIT=", f"RUNS={runs}", "GPUS=2",
                  f"ARGS={_finetune_args(extra='--trainer.max_epochs 1')}")  # fmt: skip
    _ok(first)
    last = runs / "finetune-esc50" / "fold1" / "checkpoints" / "last.ckpt"
    steps_per_epoch = torch.load(last, weights_only=False)["global_step"]
    again = _make("finetune-esc50", "FOLD=1", f"DATA={esc50}", "INIT=", f"RUNS={runs}", "GPUS=2", "RESUME=1",
                  f"ARGS={_finetune_args()}")  # fmt: skip
    _ok(again)
    assert "Restoring states from the checkpoint path" in again.stdout + again.stderr
    state = torch.load(last, weights_only=False)
    # both ranks resumed: one that started afresh would run 2 epochs and DDP would wait for it at the end
    assert state["epoch"] == 2 and state["global_step"] == 2 * steps_per_epoch > 0


def test_a_per_device_batch_too_small_for_batchnorm_is_refused_in_one_line(esc50: Path, tmp_path: Path) -> None:
    args = _finetune_args(batch=2, extra="--sync_batchnorm false")
    done = _make("finetune-esc50", f"DATA={esc50}", "INIT=", f"RUNS={tmp_path}", "GPUS=2", f"ARGS={args}")
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("audioclip: error:")]
    assert errors == [
        "audioclip: error: data.batch_size: 1 clip(s) per device is too few for BatchNorm in training (it needs at "
        "least 2): raise the batch size or use fewer devices"
    ]


@pytest.fixture(scope="module")
def audioset_shards(tmp_path_factory) -> Path:
    """AudioSet shards made the way a user makes them: the test videos, then `make data-audioset` (14 good clips;
    the training split validates too, so that each of the 2 ranks gets a chunk of it)."""
    base = tmp_path_factory.mktemp("audioset")
    testmedia = [str(VENV / "bin" / "python"), "-m", "audioclip.data.audioset.testmedia"]
    _ok(_run([*testmedia, str(base / "media"), "--n", "16"]))
    root = base / "root"
    done = _make(
        "data-audioset",
        f"AUDIOSET_SEGMENTS={base / 'media' / 'segments.csv'}",
        f"AUDIOSET_CLIPS={base / 'media' / 'videos'}",
        f"AUDIOSET_ROOT={root}",
        "AUDIOSET_VAL_FRACTION=0.25",
        "ARGS=--chunk-bytes 200KB",  # several chunks: LitData hands each rank whole chunks
    )
    _ok(done)
    return root / "shards"


@pytest.mark.parametrize(
    ("target", "model_args"),
    [
        ("pretrain-audio", "--model.init_args.model esresnext-fbsp-tiny --model.init_args.imagenet_init false"),
        ("train-partial", "--model.init_args.model audioclip-tiny --model.init_args.init_from null "
                          "--model.init_args.audio_init_from null"),
        ("train-full", "--model.init_args.model audioclip-tiny --model.init_args.init_from null"),
    ],
)  # fmt: skip
def test_audioset_phases_on_two_ranks(audioset_shards: Path, tmp_path: Path, target: str, model_args: str) -> None:
    args = (
        f"{model_args} --data.init_args.batch_size 4 --data.init_args.num_workers 1 --trainer.max_steps 2 "
        f"--trainer.limit_val_batches 1 {TINY} --data.init_args.val_dir {audioset_shards / 'train'}"
    )
    done = _make(target, f"SHARDS={audioset_shards}", f"RUNS={tmp_path}", "GPUS=2", f"ARGS={args}")
    _ok(done)
    run = tmp_path / target / "main"
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["global_step"] == 2
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_evaluate_under_torchrun_on_two_ranks_counts_every_clip_once(esc50: Path, tiny_checkpoint: Path, tmp_path):
    torchrun = [str(VENV / "bin" / "torchrun"), "--nproc_per_node", "2", "--master_port", str(_free_port())]
    common = ["zeroshot", "--dataset", "esc50", "--root", str(esc50), "--checkpoint", str(tiny_checkpoint),
              "--model", "audioclip-tiny", "--device", "cpu", "--batch-size", "5"]  # fmt: skip
    two = _run([*torchrun, "-m", "audioclip.cli", "evaluate", *common, "--out", str(tmp_path / "two")])
    _ok(two)
    one = _run([str(VENV / "bin" / "audioclip"), "evaluate", *common, "--out", str(tmp_path / "one")])
    _ok(one)
    results = [json.loads(next((tmp_path / n).rglob("results.json")).read_text()) for n in ("two", "one")]
    for result in results:
        del result["created"]
    assert results[0] == results[1]  # same accuracy per fold, from the same 24 clips, none counted twice


def test_multi_node_run_dir_not_shared_is_refused(esc50: Path, tmp_path: Path) -> None:
    """Two 'nodes' (one process each, as SLURM or torchrun would start them) whose run directories differ:
    node 0 has a last.ckpt, node 1 does not see it. Resuming there must stop, not split the run."""
    done = _make("finetune-esc50", "FOLD=1", f"DATA={esc50}", "INIT=", f"RUNS={tmp_path / 'node0'}",
                 f"ARGS={_finetune_args(extra='--trainer.max_epochs 1 --trainer.strategy auto')}")  # fmt: skip
    _ok(done)
    port = str(_free_port())
    procs = []
    for node in (0, 1):
        env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "NODE_RANK": str(node), "LOCAL_RANK": "0",
               "WORLD_SIZE": "2"}  # fmt: skip
        cmd = ["make", "--no-print-directory", f"VENV={VENV}", "finetune-esc50", "FOLD=1", f"DATA={esc50}", "INIT=",
               f"RUNS={tmp_path / f'node{node}'}", "NODES=2", "RESUME=1", f"ARGS={_finetune_args()}"]  # fmt: skip
        procs.append(
            subprocess.Popen(
                cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env={**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", **env},
            )  # fmt: skip
        )
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode != 0
        assert "is not shared by every node" in err or "cannot read: the run directory must be" in err, err[-3000:]


SIGNAL_ONE_RANK = '''
import os
import signal

from lightning.pytorch.callbacks import Callback


class SignalRankOne(Callback):
    """SIGUSR1 to rank 1's own process only, during the batch that makes global step 2."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_rank == 1 and trainer.global_step == 1:
            os.kill(os.getpid(), signal.SIGUSR1)
'''


def test_a_signal_to_one_rank_saves_and_stops_every_rank(esc50: Path, tmp_path: Path) -> None:
    """The signal decision is one all-reduce every --save_on_signal.check_every_n_steps steps: rank 0, which got no
    signal, learns of rank 1's and both write last.ckpt at the same step and stop with 128 + SIGUSR1."""
    (tmp_path / "signal_one_rank.py").write_text(SIGNAL_ONE_RANK)
    runs = tmp_path / "runs"
    extra = ("--save_on_signal.check_every_n_steps 2 --trainer.max_epochs 20 "
             "--trainer.callbacks+=signal_one_rank.SignalRankOne")
    done = _make("finetune-esc50", "FOLD=1", f"DATA={esc50}", "INIT=", f"RUNS={runs}", "GPUS=2",
                 f"ARGS={_finetune_args(extra=extra)}", env={"PYTHONPATH": str(tmp_path)})  # fmt: skip
    assert done.returncode != 0
    assert "SIGUSR1: saved" in done.stdout + done.stderr, done.stderr[-3000:]
    state = torch.load(runs / "finetune-esc50" / "fold1" / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["global_step"] == 2  # noted during step 2, decided at its end (2 is a multiple of N = 2)


@pytest.mark.parametrize("layout", ["captions", "labels"])
def test_own_data_finetune_on_two_ranks(layout: str, tmp_path: Path) -> None:
    """`make finetune DATA=...` on 2 ranks: captions (retrieval gathered across ranks) and multi-label (its own
    head; the audio-text scale is then unused and must not be trainable)."""
    if layout == "captions":
        data = write_caption_manifest(tmp_path / "captions", clips_per_class=4, classes=2)
    else:
        data = write_labels_manifest(tmp_path / "labels", clips=16, classes=3)
    args = (
        f"--model.init_args.model audioclip-tiny --trainer.max_epochs 2 --data.init_args.batch_size 4 "
        f"--data.init_args.num_workers 1 --data.init_args.clip_seconds 1 --data.init_args.max_seconds 2 "
        f"--data.init_args.val_fraction 0.34 {TINY}"
    )
    done = _make("finetune", f"DATA={data}", "INIT=", f"RUNS={tmp_path / 'runs'}", "GPUS=2", f"ARGS={args}")
    _ok(done)
    metrics = json.loads(next((tmp_path / "runs" / "finetune").glob("*/test_metrics.json")).read_text())
    assert ("test/t2a_map@10" if layout == "captions" else "test/map") in metrics
