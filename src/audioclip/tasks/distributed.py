"""What makes N ranks train as one: BatchNorm over the global batch, one resume decision, a shared run directory.

- `GlobalBatchNorm2d` / `SyncBatchNormPlugin`: with the global batch split over N ranks, plain BatchNorm normalises
  each rank's B/N clips with their own statistics (and fails at 1 clip a device: `att5.bn` sees (B, C, 1, 1)).
  The plugin converts every BatchNorm to one that uses the statistics of the whole global batch: torch's
  `SyncBatchNorm` on CUDA (NCCL), `GlobalBatchNorm2d` elsewhere (torch's refuses CPU tensors; this one all-reduces
  with gloo, so the equality test runs on CPU). `audioclip fit` installs it when the world size is above 1 unless
  `--sync_batchnorm false`. Cost: two small all-reduces per BatchNorm call in training (ESResNeXt runs its body
  once per audio channel), about 2 x 60 collectives a step for the paper model; frozen (eval-mode) BatchNorms, as
  CLIP's in fine-tuning and partial training, do not synchronise.
- `ResumeAgreement`: under multi-node DDP every process resolves `--ckpt_path last` itself; with node-local run
  directories node 0 would resume and the others start afresh. Once the process group is up, every rank must have
  made rank 0's choice, or the run stops with one line.
- `check_shared_run_dir`: rank 0 writes a token into the run directory and every rank must see it; a run
  directory that is not shared across nodes is refused (rank 0 alone writes checkpoints, so the others could
  never resume).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins import LayerSync
from torch import nn

from audioclip.process_group import rank_and_world


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch across all DDP ranks (any backend).

    Two-pass (mean, then the mean squared deviation) like BatchNorm itself, all-reduced with gradients
    (`torch.distributed.nn.functional.all_reduce`), so that N ranks give the loss, gradients and running
    statistics of one process on the concatenated batch. Ranks may hold different numbers of clips.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and rank_and_world()[1] > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        channels = x.shape[1]
        count = torch.full((1,), x.numel() / channels, dtype=x.dtype, device=x.device)
        first = all_reduce(torch.cat([x.sum(dim=(0, 2, 3)), count]))
        total = first[-1]
        mean = first[:channels] / total
        centred = x - mean.view(1, -1, 1, 1)
        var = all_reduce(centred.pow(2).sum(dim=(0, 2, 3))) / total  # biased, as BatchNorm normalises with
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
                unbiased = var.detach() * total / (total - 1).clamp(min=1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        out = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return out


def convert_global_batchnorm(module: nn.Module) -> nn.Module:
    """Every `nn.BatchNorm2d` in `module` replaced by a `GlobalBatchNorm2d` holding the same parameters and
    statistics (state-dict keys unchanged)."""
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, GlobalBatchNorm2d):
        converted = GlobalBatchNorm2d(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        converted.load_state_dict(module.state_dict())
        converted.train(module.training)
        if module.affine:
            converted.weight.requires_grad_(module.weight.requires_grad)
            converted.bias.requires_grad_(module.bias.requires_grad)
        converted.to(device=module.weight.device if module.affine else None)
        return converted
    for name, child in module.named_children():
        module.add_module(name, convert_global_batchnorm(child))
    return module


class SyncBatchNormPlugin(LayerSync):
    """Lightning's layer-sync plugin (`Trainer(plugins=[...])`) with global-batch BatchNorm on every device type
    (see the module docstring). DDP applies it when fitting starts, once the process group is up and before the model
    moves to its device, so the backend says which BatchNorm: torch's SyncBatchNorm under NCCL, ours otherwise.

    Args:
        device_type: `cuda` or `cpu`; None: `cuda` when the process group's backend is NCCL.
    """

    def __init__(self, device_type: str | None = None) -> None:
        self.device_type = device_type

    def apply(self, model: nn.Module) -> nn.Module:
        device_type = self.device_type
        if device_type is None:
            import torch.distributed as dist

            nccl = dist.is_available() and dist.is_initialized() and "nccl" in str(dist.get_backend()).lower()
            device_type = "cuda" if nccl else "cpu"
        if device_type == "cuda":
            return nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return convert_global_batchnorm(model)

    def revert(self, model: nn.Module) -> nn.Module:
        for name, child in model.named_children():
            if isinstance(child, GlobalBatchNorm2d | nn.SyncBatchNorm):
                plain = nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine)
                plain.load_state_dict(child.state_dict())
                plain.train(child.training)
                plain.to(device=child.running_mean.device)
                model.add_module(name, plain)
            else:
                self.revert(child)
        return model


def smallest_batch_for_batchnorm(per_device_batch: int, world_size: int, sync: bool) -> None:
    """BatchNorm in training needs more than one value per channel: `att5.bn` sees one per clip."""
    if sync and world_size > 1:
        return  # the statistics are the global batch's
    if per_device_batch < 2:
        raise ValueError(
            f"data.batch_size: {per_device_batch} clip(s) per device is too few for BatchNorm in training "
            "(it needs at least 2): raise the batch size or use fewer devices"
        )


def _every_rank_sees(path: Path, trainer: L.Trainer) -> bool:
    """Whether `path` is a file on every rank (one all-reduce)."""
    seen = torch.tensor([1 if path.is_file() else 0], device=trainer.strategy.root_device)
    trainer.strategy.reduce(seen, reduce_op="min")
    return bool(seen.item())


def _every_rank_agrees(value: bool, trainer: L.Trainer) -> bool:
    agreed = torch.tensor([1 if value else 0], device=trainer.strategy.root_device)
    trainer.strategy.reduce(agreed, reduce_op="min")
    return bool(agreed.item())


class ResumeAgreement(Callback):
    """Every rank resumes from the checkpoint rank 0 resumes from, or the run stops before anything is restored.

    `audioclip fit` resolves `--ckpt_path last` in each process before the trainer is built; this callback's `setup`
    runs once the process group is up and before Lightning restores the checkpoint. It refuses a run directory
    that not every rank sees (`check_shared_run_dir`), then checks that every rank chose rank 0's checkpoint and can
    read it.

    Args:
        ckpt_path: the checkpoint this process will resume from (None: it starts afresh).
    """

    def __init__(self, ckpt_path: str | None) -> None:
        self.ckpt_path = ckpt_path

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or trainer.world_size == 1:
            return
        check_shared_run_dir(trainer)
        chosen = trainer.strategy.broadcast(self.ckpt_path, src=0)
        if not _every_rank_agrees(chosen == self.ckpt_path, trainer):
            raise ValueError(
                f"ckpt_path: rank 0 resumes from {chosen or 'nothing (a fresh start)'}, but another rank sees another "
                "run state: the run directory must be on a file system every node shares "
                "(--trainer.default_root_dir / RUNS=)"
            )
        if chosen is not None and "://" not in str(chosen) and not _every_rank_sees(Path(chosen), trainer):
            raise ValueError(
                f"ckpt_path: rank 0 resumes from {chosen}, which another rank cannot read: the run directory must be "
                "on a file system every node shares (--trainer.default_root_dir / RUNS=)"
            )


def check_shared_run_dir(trainer: L.Trainer) -> None:
    """Refuse a run directory that not every rank sees (e.g. node-local disks on a multi-node run)."""
    if trainer.world_size == 1 or "://" in str(trainer.default_root_dir):
        return  # an object store is the same for every node
    root = Path(trainer.default_root_dir)
    token = None
    if trainer.is_global_zero:
        token = uuid.uuid4().hex
        root.mkdir(parents=True, exist_ok=True)
        (root / f".shared-check-{token}").write_text(f"{os.uname().nodename}\n")
    token = trainer.strategy.broadcast(token, src=0)
    path = root / f".shared-check-{token}"
    shared = _every_rank_sees(path, trainer)
    trainer.strategy.barrier("shared-run-dir")
    if trainer.is_global_zero:
        path.unlink(missing_ok=True)
    if not shared:
        raise ValueError(
            f"trainer.default_root_dir: {root} is not shared by every node (rank 0 writes the checkpoints there, so "
            "the other nodes could never resume): put it on a shared file system (RUNS=/shared/path)"
        )
