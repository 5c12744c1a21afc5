"""The shared base of the training phases: model from the registry, `init_from`, optimiser, scheduler, logging.

Hyper-parameters (Guzhov et al., "AudioCLIP", section 4.3): SGD with Nesterov momentum 0.9, weight decay 5e-4,
exponential learning-rate decay per epoch. As in the reference, the fbsp filter-bank parameters and the logit
scales form a parameter group without weight decay.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from audioclip.data.provenance import describe_data
from audioclip.models import AudioCLIP, create_model
from audioclip.models.fbsp import normalize_fbsp_grads_
from audioclip.models.lineage import LINEAGE_KEY, weights_lineage
from audioclip.models.pretrained import WeightsError, load_state, read_checkpoint, resolve, state_dict_of
from audioclip.tasks.callbacks import SaveOnSignal
from audioclip.tasks.checkpoints import checkpoint_dir

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
        content = self._init_weights(init_from) if init_from else None
        self.init_lineage = weights_lineage(init_from, content)

    # the model variant this phase makes (`audioclip.models.lineage`); None: the variant of `init_from` is kept
    produces: str | None = None
    # what the test scores are against: the class names as `text` (zero-shot style), or a classifier's `labels`
    scores_against: str = "text"

    def lineage(self) -> dict:
        """The lineage of the weights this run trains: its start, plus this run's step (phase, data, protocol)."""
        steps = list(self.init_lineage["steps"])
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None:
            steps.append({"phase": type(self).__name__, **describe_data(datamodule)})
        variant = self.produces or self.init_lineage["variant"]
        return {"variant": variant, "model": self.hparams.model, "origin": self.init_lineage["origin"], "steps": steps}

    def _init_weights(self, init_from: str, fresh: tuple[str, ...] = ()) -> Mapping[str, Any]:
        """Load `init_from` strictly; keys starting with a `fresh` prefix keep their new initialisation. Returns the
        file's content (read once: its lineage is read from it too)."""
        path = Path(init_from)
        if not path.exists() and "/" in init_from:
            raise WeightsError(f"init_from: {init_from}: no such file")
        try:
            path, _ = resolve(init_from)
            content = read_checkpoint(path)
            load_state(self.model, state_dict_of(content, path), str(path), fresh=fresh)
        except WeightsError as error:
            raise WeightsError(f"init_from: {error} (model: {self.hparams.model})") from error
        log.info("initialised %s from %s", self.hparams.model, init_from)
        return content

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
        dirpath = checkpoint_dir(self.trainer.default_root_dir)
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

    def training_loss(self, batch: dict) -> torch.Tensor:
        """The loss of one training batch: the one thing the phases' training steps differ in."""
        raise NotImplementedError

    def training_step(self, batch, batch_idx):
        loss = self.check_finite(self.training_loss(batch), batch, batch_idx)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["audio"]))
        return loss

    def on_train_batch_start(self, batch, batch_idx) -> None:
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)
        self._batch_ids = (batch_idx, list(batch.get("id", []))[:8] if isinstance(batch, dict) else [])
        if self.skip_nonfinite_loss:
            # the forward pass updates BatchNorm statistics; a skipped step must not keep NaN ones
            self._buffers_at_batch_start = [buffer.clone() for buffer in self.buffers()]

    # `audioclip fit --skip_nonfinite_loss true`: a step with a NaN/Inf loss or gradient is skipped and counted
    skip_nonfinite_loss: bool = False
    nonfinite_steps: int = 0
    # `audioclip fit --check_every_n_steps N`: how often the NaN/Inf flags (and, under DDP, the signals) are read
    check_every_n_steps: int = 10
    # the per-step checks here decide for `SaveOnSignal` too (one collective for both)
    runs_step_checks = True

    def _where(self, step: int | None = None, batch: tuple | None = None) -> str:
        batch_idx, ids = batch or getattr(self, "_batch_ids", ("?", []))
        step = self.global_step if step is None else step
        return f"at global step {step} (batch {batch_idx}: {', '.join(map(str, ids))})"

    # ---- NaN/Inf checks without a host sync per step ----------------------------------------------------------
    # Each step ORs "loss or gradient non-finite" into a flag tensor on the device (no sync), and notes on the host
    # which batch it was. The flags are read every `check_every_n_steps` steps, at the end of an epoch and before
    # every checkpoint is written; under DDP that read is one all-reduce that also carries the signal decision.
    # A NaN therefore stops the run at most N - 1 steps late (those steps are lost, no checkpoint holds them).

    def _note_nonfinite(self, value: torch.Tensor, kind: str) -> None:
        """Note on the device (no host sync) whether `value` (the loss or the gradient norm) is non-finite."""
        n = self.check_every_n_steps
        if getattr(self, "_flags", None) is None or self._flags.device != value.device or self._flags.shape[1] != n:
            # row 0: the loss, row 1: the gradient norm; a NaN row keeps the value to report it
            self._flags = torch.zeros(2, n, device=value.device)
            self._window: dict[int, tuple[int, tuple]] = {}
        if self.global_step not in self._window:
            self._window[self.global_step] = (len(self._window) % n, getattr(self, "_batch_ids", ("?", [])))
        row, slot = (0 if kind == "loss" else 1), self._window[self.global_step][0]
        value = value.detach().float()
        self._flags[row, slot] = torch.where(torch.isfinite(value), self._flags[row, slot], value)

    def _first_nonfinite(self) -> str | None:
        """The first noted step with a non-finite loss or gradient, described (reads the flags: one host sync); the
        flags are cleared."""
        if getattr(self, "_flags", None) is None or not self._window:
            return None
        loss, grad = self._flags.tolist()
        found = None
        for step, (slot, batch) in sorted(self._window.items()):
            if not math.isfinite(loss[slot]):
                found = f"non-finite loss {loss[slot]} {self._where(step, batch)}"
            elif not math.isfinite(grad[slot]):
                found = f"non-finite gradient {self._where(step, batch)}"
            if found:
                break
        self._flags.zero_()
        self._window.clear()
        return found

    def _raise_nonfinite(self, what: str) -> None:
        raise NonFiniteLossError(f"{what}; `--skip_nonfinite_loss true` skips such steps instead")

    def run_step_checks(self) -> None:
        """Read the NaN/Inf flags every `check_every_n_steps` steps and at an epoch's last batch, and act on a pending
        signal (`SaveOnSignal`): every step in one process (a host flag, free), with the flags under DDP."""
        savers = [cb for cb in self.trainer.callbacks if isinstance(cb, SaveOnSignal)]
        signum = next((cb.pending for cb in savers if cb.pending is not None), None)
        world = self.trainer.world_size
        due = self.global_step % self.check_every_n_steps == 0 or self.trainer.is_last_batch
        if world > 1 and not due:
            return
        where = self._first_nonfinite() if due else None
        if world > 1:
            code = torch.tensor(
                [0 if where is None else 1, 0 if signum is None else int(signum)], device=self.device
            )
            self.trainer.strategy.reduce(code, reduce_op="max")
            bad, code_signal = code.tolist()
            if bad and where is None:
                where = f"non-finite loss or gradient on another rank {self._where()}"
            signum = signum or (code_signal or None)
        if where is not None:
            self._raise_nonfinite(where)
        if signum is not None and savers:
            savers[0].save_and_stop(self.trainer, signum)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.run_step_checks()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # never write weights a NaN has reached: this rank's flags are read now (the gradient flag is the same on
        # every rank, as DDP averaged the gradients; no collective here, since Lightning's SLURM handler saves
        # from inside a signal handler)
        if self._trainer is not None and self.trainer.state.fn == "fit":
            where = self._first_nonfinite()
            if where is not None:
                self._raise_nonfinite(where)
        # read back by `audioclip.models.lineage.weights_lineage` when a later phase or an evaluation starts from it
        checkpoint[LINEAGE_KEY] = self.lineage()

    def check_finite(self, loss: torch.Tensor, batch: dict, batch_idx: int) -> torch.Tensor:
        """A NaN/Inf loss stops the run naming the step and the batch's samples, instead of training on garbage.

        With `skip_nonfinite_loss` the decision is taken at once (a host sync and, under DDP, an all-reduce per
        step), since the step itself is to be skipped; otherwise the loss is only noted (see `run_step_checks`)."""
        if not self.skip_nonfinite_loss and self._trainer is not None:
            self._note_nonfinite(loss, "loss")
            return loss
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
        """The fbsp gradient rule, then the NaN/Inf gradient check.

        Lightning calls this after DDP has averaged the gradients and after a GradScaler has unscaled them, which
        is where the reference's per-filter-bank normalisation (divide by the infinity norm) belongs.
        Non-finite gradients stop the run (or skip the step): a NaN input can leave the loss finite (the fbsp
        front end clamps the power spectrum) and still turn every weight into NaN."""
        normalize_fbsp_grads_(self.model)
        if getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            return  # fp16's GradScaler skips steps with non-finite gradients itself, and lowers its scale
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        total = torch.nn.utils.get_total_norm(grads)
        if not self.skip_nonfinite_loss:
            self._note_nonfinite(total, "gradient")
            return
        # gradients are all-reduced by now, so every DDP rank decides alike
        if not torch.isfinite(total):
            log.warning("non-finite gradient %s: the step is skipped", self._where())
            # a parameter without a gradient is left untouched by the optimiser (no momentum or weight decay)
            optimizer.zero_grad(set_to_none=True)
            for buffer, before in zip(self.buffers(), self._buffers_at_batch_start, strict=True):
                buffer.copy_(before)
            self.nonfinite_steps += 1
        self.log("train/nonfinite_steps", float(self.nonfinite_steps), on_step=True, on_epoch=False)

    def tokens(self, texts: list[str]) -> torch.Tensor:
        return self.clip_model.tokenize(texts, self.hparams.template)


def freeze(module: nn.Module) -> None:
    """No gradients and eval mode (BatchNorm statistics frozen); `train()` keeps it so via `frozen_eval`."""
    for p in module.parameters():
        p.requires_grad_(False)
    module.eval()
