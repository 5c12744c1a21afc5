"""`NonFiniteGuard`: a NaN/Inf loss or gradient stops the run naming the step and the batch, or skips the step.

A NaN input can leave the loss finite (the fbsp front end clamps the power spectrum) and still turn every weight into
NaN, so gradients are checked as well as losses. Reading a flag every step would cost a host sync (and under DDP a
collective) per step, so each step ORs "non-finite" into a flag tensor on the device, and the flags are read every
`check_every_n_steps` steps, at an epoch's last batch and before any checkpoint is written. A NaN therefore stops
the run at most N - 1 steps late; those steps are lost, and no checkpoint ever holds them. With `skip=True` the
decision is taken at once instead (a host sync and, under DDP, an all-reduce per step), since the step itself is to be
skipped: its gradients are dropped and the BatchNorm statistics its forward pass moved are put back.

    audioclip fit ... --nonfinite_guard.skip true --nonfinite_guard.check_every_n_steps 10
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError, ValueError):
    """A NaN/Inf training loss or gradient; also a ValueError, so that the `audioclip` command reports it in one
    line."""


class NonFiniteGuard(Callback):
    """Stop (or with `skip`, skip and count) training steps whose loss or gradient is NaN/Inf.

    Args:
        skip: skip (and count, as `train/nonfinite_steps`) a step whose loss or gradient is NaN/Inf instead of
            stopping the run.
        check_every_n_steps: read the flags (under DDP: one all-reduce) every N optimizer steps; without `skip`, a
            NaN stops the run at most N - 1 steps late.
    """

    def __init__(self, skip: bool = False, check_every_n_steps: int = 10) -> None:
        if check_every_n_steps < 1:
            raise ValueError(f"nonfinite_guard.check_every_n_steps: must be >= 1, got {check_every_n_steps}")
        self.skip, self.check_every_n_steps = skip, check_every_n_steps
        self.skipped_steps = 0
        self._flags: torch.Tensor | None = None  # row 0: loss, row 1: gradient norm; a NaN slot keeps the value
        self._window: dict[int, tuple[int, tuple]] = {}  # global step -> (slot, (batch index, sample ids))
        self._batch: tuple = ("?", [])
        self._buffers: list[torch.Tensor] = []

    def _where(self, step: int, batch: tuple) -> str:
        batch_idx, ids = batch
        return f"at global step {step} (batch {batch_idx}: {', '.join(map(str, ids))})"

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int):
        self._batch = (batch_idx, list(batch.get("id", []))[:8] if isinstance(batch, dict) else [])
        if self.skip:
            # the forward pass updates BatchNorm statistics; a skipped step must not keep NaN ones
            self._buffers = [buffer.clone() for buffer in pl_module.buffers()]

    # ---- noting without a host sync ---------------------------------------------------------------------------------
    def _note(self, value: torch.Tensor, row: int, step: int) -> None:
        n = self.check_every_n_steps
        if self._flags is None or self._flags.device != value.device:
            self._flags = torch.zeros(2, n, device=value.device)
        if step not in self._window:
            self._window[step] = (len(self._window) % n, self._batch)
        slot = self._window[step][0]
        value = value.detach().float()
        self._flags[row, slot] = torch.where(torch.isfinite(value), self._flags[row, slot], value)

    def _first_nonfinite(self) -> str | None:
        """The first noted step with a non-finite loss or gradient, described (one host sync); the flags are cleared."""
        if self._flags is None or not self._window:
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

    def _stop(self, what: str) -> None:
        raise NonFiniteLossError(f"{what}; `--nonfinite_guard.skip true` skips such steps instead")

    # ---- the hooks ----------------------------------------------------------------------------------------------
    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        if not self.skip:
            self._note(loss, 0, trainer.global_step)
            return
        finite = bool(torch.isfinite(loss))
        if trainer.world_size > 1:  # every rank skips alike, rather than the others waiting in the next all-reduce
            finite = trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            value = loss.item()
            what = f"non-finite loss {value}" if not math.isfinite(value) else "non-finite loss on another rank"
            log.warning("%s %s: the step is skipped", what, self._where(trainer.global_step, self._batch))

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            return  # fp16's GradScaler skips steps with non-finite gradients itself, and lowers its scale
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        total = torch.nn.utils.get_total_norm(grads)
        if not self.skip:
            self._note(total, 1, trainer.global_step)
            return
        # gradients are all-reduced by now, so every DDP rank decides alike
        if not torch.isfinite(total):
            log.warning("non-finite gradient %s: the step is skipped", self._where(trainer.global_step, self._batch))
            # a parameter without a gradient is left untouched by the optimiser (no momentum or weight decay)
            optimizer.zero_grad(set_to_none=True)
            for buffer, before in zip(pl_module.buffers(), self._buffers, strict=True):
                buffer.copy_(before)
            self.skipped_steps += 1
        pl_module.log("train/nonfinite_steps", float(self.skipped_steps), on_step=True, on_epoch=False)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        """Read the flags every `check_every_n_steps` steps and at an epoch's last batch."""
        if self.skip:
            return
        if trainer.global_step % self.check_every_n_steps and not trainer.is_last_batch:
            return
        where = self._first_nonfinite()
        if trainer.world_size > 1:
            bad = torch.tensor([0 if where is None else 1], device=pl_module.device)
            if trainer.strategy.reduce(bad, reduce_op="max").item() and where is None:
                where = f"non-finite loss or gradient on another rank {self._where(trainer.global_step, self._batch)}"
        if where is not None:
            self._stop(where)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # never write weights a NaN has reached: this rank's flags are read now (the gradient flag is the same on
        # every rank, as DDP averaged the gradients; no collective here, since Lightning's SLURM handler saves
        # from inside a signal handler)
        if trainer.state.fn == "fit":
            where = self._first_nonfinite()
            if where is not None:
                self._stop(where)
