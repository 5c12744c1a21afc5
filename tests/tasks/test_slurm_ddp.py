"""The 2-process DDP fine-tune as SLURM starts it: `srun` with 2 tasks on one node of a real Slurm
(tools/slurm-local), each task running `make finetune-esc50 GPUS=2` on CPU (gloo). Lightning must read its ranks
from SLURM's variables (SLURMEnvironment): rank = SLURM_PROCID, world size = SLURM_NTASKS; the two ranks then train
as one and end with the same weights.
"""

import json
import os
import shlex
from pathlib import Path

import pytest
import torch
from slurm_cluster import jobs, sbatch, slurm, wait_until

from audioclip.data.synthetic import write_esc50

pytestmark = [pytest.mark.cluster, pytest.mark.ddp]

ROOT = Path(__file__).resolve().parents[2]

PROBE = '''
import json
import os

import torch
from lightning.pytorch.callbacks import Callback


class RankProbe(Callback):
    """Writes what this process is to `<folder>/rank-<SLURM_PROCID>.json` at the start and end of training."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def _write(self, trainer, pl_module, when):
        path = os.path.join(self.folder, f"rank-{os.environ['SLURM_PROCID']}-{when}.json")
        record = {
            "global_rank": trainer.global_rank, "local_rank": trainer.local_rank, "world_size": trainer.world_size,
            "environment": type(trainer.strategy.cluster_environment).__name__,
            "procid": os.environ["SLURM_PROCID"], "ntasks": os.environ["SLURM_NTASKS"],
            "step": trainer.global_step,
            "weights": float(sum(p.detach().double().sum() for p in pl_module.parameters())),
        }
        with open(path, "w") as f:
            json.dump(record, f)

    def on_train_start(self, trainer, pl_module):
        self._write(trainer, pl_module, "start")

    def on_train_end(self, trainer, pl_module):
        self._write(trainer, pl_module, "end")
'''


@pytest.fixture(scope="module")
def cluster():
    with slurm() as env:
        yield env


def test_srun_two_tasks_give_lightning_the_ranks_slurm_assigned(cluster, tmp_path: Path) -> None:
    data = tmp_path / "esc50"
    write_esc50(data, clips_per_class=4, classes=4, seed=0, progress=False)
    probes, ranks = tmp_path / "probes", tmp_path / "ranks"
    probes.mkdir()
    ranks.mkdir()
    (probes / "rank_probe.py").write_text(PROBE)
    args = [
        "--model.init_args.model", "audioclip-tiny", "--model.init_args.num_classes", "4",
        "--data.init_args.num_workers", "0", "--data.init_args.batch_size", "4", "--data.init_args.val_fraction",
        "0.2", "--data.init_args.progress", "false", "--trainer.accelerator", "cpu", "--trainer.max_epochs", "1",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.callbacks+", json.dumps({"class_path": "rank_probe.RankProbe", "init_args": {"folder": str(ranks)}}),
    ]  # fmt: skip
    make = ["make", "--no-print-directory", "-C", str(ROOT), "finetune-esc50", f"DATA={data}",
            f"RUNS={tmp_path / 'runs'}", "FOLD=1", "INIT=", "GPUS=2", f"ARGS={shlex.join(args)}"]  # fmt: skip
    env = {
        **cluster, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(probes), os.environ.get("PYTHONPATH", "")]),
    }  # fmt: skip
    log = tmp_path / "job.log"
    # Lightning refuses a bare `--ntasks=2` ("use --ntasks-per-node"): the tasks of a node are asked for per node
    job_id = sbatch(env, "--job-name=audioclip-ddp", "--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1",
                    "--mem=4G", f"--output={log}", "--wrap", f"srun {shlex.join(make)}", cwd=tmp_path)  # fmt: skip
    finished = wait_until(env, job_id, {"COMPLETED"}, timeout=900)
    assert finished["JobState"] == "COMPLETED", log.read_text()[-4000:]
    assert jobs(env, job_id)[0]["NumTasks"] == "2"

    records = {p.stem: json.loads(p.read_text()) for p in ranks.glob("*.json")}
    assert sorted(records) == ["rank-0-end", "rank-0-start", "rank-1-end", "rank-1-start"], log.read_text()[-4000:]
    for procid in ("0", "1"):
        start = records[f"rank-{procid}-start"]
        assert start["environment"] == "SLURMEnvironment"
        assert (start["global_rank"], start["local_rank"], start["world_size"]) == (int(procid), int(procid), 2)
        assert start["ntasks"] == "2"
    # DDP kept the two ranks' weights equal, and both made the same number of steps
    end0, end1 = records["rank-0-end"], records["rank-1-end"]
    assert end0["step"] == end1["step"] > 0
    assert torch.isclose(torch.tensor(end0["weights"]), torch.tensor(end1["weights"]), rtol=0, atol=1e-6)
    assert end0["weights"] != records["rank-0-start"]["weights"]  # it trained
