"""The shared base of the training phases: model from the registry, `init_from`, optimiser, scheduler, logging.

Hyper-parameters (Guzhov et al., "AudioCLIP", section 4.3): SGD with Nesterov momentum 0.9, weight decay 5e-4,
exponential learning-rate decay per epoch. As in the reference, the fbsp filter-bank parameters and the logit
scales form a parameter group without weight decay.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from audioclip.models import AudioCLIP, create_model, load_pretrained
from audioclip.models.pretrained import WeightsError

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError, ValueError):
    """A NaN/Inf training loss or gradient; also a ValueError, so that the `audioclip` command reports it in one
    line."""


def _no_decay(name: str) -> bool:
    return ".fbsp." in f".{name}" or name.split(".")[-1].startswith("logit_scale")


class AudioCLIPTask(L.LightningModule):
    """Base LightningModule: builds `model` by registry name and optionally loads `init_from` weights.

    Args:
        model: registered model name (`audioclip`, `audioclip-tiny`, `esresnext-fbsp`, ...).
        init_from: weights to start from: the previous phase's checkpoint, a state dict, or an official tag
            (`full`, `partial`, `esrnxfbsp`, `clip-rn50`). Not the same as `--ckpt_path`, which resumes a run.
        lr: initial learning rate.
        gamma: ExponentialLR decay per epoch.
        momentum: SGD (Nesterov) momentum.
        weight_decay: L2 penalty, not applied to the fbsp parameters and the logit scales.
        template: text template for class names, e.g. "{}" (the reference's) or "the sound of {}".
    """

    def __init__(
        self,
        model: str = "audioclip",
        init_from: str | None = None,
        lr: float = 1e-4,
        gamma: float = 0.95,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        template: str = "{}",
        model_overrides: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = create_model(model, **(model_overrides or {}))
        if init_from:
            self._init_weights(init_from)

    def _init_weights(self, init_from: str) -> None:
        path = Path(init_from)
        if not path.exists() and "/" in init_from:
            raise WeightsError(f"init_from: {init_from}: no such file")
        try:
            load_pretrained(self.model, init_from)
        except WeightsError as error:
            raise WeightsError(f"init_from: {error} (model: {self.hparams.model})") from error
        log.info("initialised %s from %s", self.hparams.model, init_from)

    @property
    def clip_model(self) -> AudioCLIP:
        if not isinstance(self.model, AudioCLIP):
            raise TypeError(f"{type(self).__name__} needs an AudioCLIP model, got {self.hparams.model!r}")
        return self.model

    # the validation metric that selects checkpoints, and whether higher is better
    monitor: tuple[str, str] = ("val/loss", "min")

    def configure_callbacks(self):
        metric, mode = self.monitor
        # no checkpoint under enable_checkpointing=False or fast_dev_run; at `test` after `fit` the one attached
        # for fit is kept (it knows the best path), instead of Lightning's note that a new one overrides it
        if self.trainer.fast_dev_run or not self.trainer.checkpoint_callbacks:
            return []
        if any(cb.monitor == metric for cb in self.trainer.checkpoint_callbacks):
            return []
        name = metric.replace("/", "_")
        dirpath = Path(self.trainer.default_root_dir) / "checkpoints"
        return [
            ModelCheckpoint(
                dirpath=dirpath,
                monitor=metric,
                mode=mode,
                save_last=True,
                auto_insert_metric_name=False,
                enable_version_counter=False,  # last.ckpt is always the newest, for RESUME=1
                filename=f"best-epoch{{epoch}}-step{{step}}-{name}{{{metric}:.4f}}",
            )
        ]

    def configure_optimizers(self):
        params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        groups = [
            {"params": [p for n, p in params if not _no_decay(n)], "weight_decay": self.hparams.weight_decay},
            {"params": [p for n, p in params if _no_decay(n)], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.SGD(
            [g for g in groups if g["params"]], lr=self.hparams.lr, momentum=self.hparams.momentum, nesterov=True
        )
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=self.hparams.gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def on_train_batch_start(self, batch, batch_idx) -> None:
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)
        self._batch_ids = (batch_idx, list(batch.get("id", []))[:8] if isinstance(batch, dict) else [])
        if self.skip_nonfinite_loss:
            # the forward pass updates BatchNorm statistics; a skipped step must not keep NaN ones
            self._buffers_at_batch_start = [buffer.clone() for buffer in self.buffers()]

    # `audioclip fit --skip_nonfinite_loss true`: a step with a NaN/Inf loss or gradient is skipped and counted
    skip_nonfinite_loss: bool = False
    nonfinite_steps: int = 0

    def _where(self) -> str:
        batch_idx, ids = getattr(self, "_batch_ids", ("?", []))
        return f"at global step {self.global_step} (batch {batch_idx}: {', '.join(map(str, ids))})"

    def check_finite(self, loss: torch.Tensor, batch: dict, batch_idx: int) -> torch.Tensor:
        """A NaN/Inf loss stops the run naming the step and the batch's samples, instead of training on garbage."""
        finite = bool(torch.isfinite(loss))
        if self._trainer is not None and self.trainer.world_size > 1:
            # every rank stops at once, rather than the others waiting for it in the next all-reduce
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            return loss
        value = loss.item()
        what = f"non-finite loss {value}" if not math.isfinite(value) else "non-finite loss on another rank"
        self._batch_ids = (batch_idx, list(batch.get("id", []))[:8])
        if not self.skip_nonfinite_loss:
            raise NonFiniteLossError(f"{what} {self._where()}; `--skip_nonfinite_loss true` skips such steps instead")
        log.warning("%s %s: the step is skipped", what, self._where())
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Non-finite gradients stop the run (or skip the step): a NaN input can leave the loss finite (the fbsp
        front end clamps the power spectrum) and still turn every weight into NaN."""
        if getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            return  # fp16's GradScaler skips steps with non-finite gradients itself, and lowers its scale
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        # gradients are all-reduced by now, so every DDP rank decides alike
        if grads and not torch.isfinite(torch.nn.utils.get_total_norm(grads)):
            if not self.skip_nonfinite_loss:
                raise NonFiniteLossError(
                    f"non-finite gradient {self._where()}; `--skip_nonfinite_loss true` skips such steps instead"
                )
            log.warning("non-finite gradient %s: the step is skipped", self._where())
            # a parameter without a gradient is left untouched by the optimiser (no momentum or weight decay)
            optimizer.zero_grad(set_to_none=True)
            for buffer, before in zip(self.buffers(), self._buffers_at_batch_start, strict=True):
                buffer.copy_(before)
            self.nonfinite_steps += 1
        if self.skip_nonfinite_loss:
            self.log("train/nonfinite_steps", float(self.nonfinite_steps), on_step=True, on_epoch=False)

    def tokens(self, texts: list[str]) -> torch.Tensor:
        return self.clip_model.tokenize(texts, self.hparams.template)


def freeze(module: nn.Module) -> None:
    """No gradients and eval mode (BatchNorm statistics frozen); `train()` keeps it so via `frozen_eval`."""
    for p in module.parameters():
        p.requires_grad_(False)
    module.eval()


class ChannelsLast(L.Callback):
    """Convolution weights in channels-last memory format: with `precision: bf16-mixed` this lets oneDNN use
    the AMX / tensor-core kernels (measured by `make bench-train`: 2.9x the fp32 throughput on a 2-core CPU).

        audioclip fit ... --trainer.precision bf16-mixed --trainer.callbacks+=audioclip.tasks.ChannelsLast
    """

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.to(memory_format=torch.channels_last)
