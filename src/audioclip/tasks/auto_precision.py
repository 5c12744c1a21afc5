"""Lightning's Trainer with `precision: auto` (the default of `conf/trainer.yaml`): bf16-mixed where the hardware
computes in bf16, else 32-true (`audioclip.precision`), said in the run's first line; under mixed precision the
convolutions go channels-last (`ChannelsLast`) without a callback flag.

    audioclip fit --config conf/trainer.yaml ... --trainer.precision 32-true     # force fp32
"""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
from lightning.fabric.plugins.precision.precision import _PRECISION_INPUT
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from audioclip.precision import announce, is_mixed, resolve_precision


class Trainer(L.Trainer):
    """`L.Trainer` whose `precision` also takes `auto` (its default).

    It also restates the `limit_*_batches` types. Lightning annotates them `Optional[Union[int, float]]`, but
    typing caches unions regardless of their order and hands back `Union[float, int]`, so the command line parsed
    `--trainer.limit_val_batches 1` as the float 1.0 (100 % of the batches) instead of one batch, silently.
    """

    def __init__(
        self,
        *args: Any,
        precision: _PRECISION_INPUT | Literal["auto"] | None = "auto",
        limit_train_batches: int | float | None = None,
        limit_val_batches: int | float | None = None,
        limit_test_batches: int | float | None = None,
        limit_predict_batches: int | float | None = None,
        **kwargs: Any,
    ):
        chosen, line = resolve_precision(precision, kwargs.get("accelerator", "auto"))
        if rank_zero_only.rank == 0:
            announce(line)
        super().__init__(
            *args,
            precision=chosen,
            limit_train_batches=limit_train_batches,
            limit_val_batches=limit_val_batches,
            limit_test_batches=limit_test_batches,
            limit_predict_batches=limit_predict_batches,
            **kwargs,
        )


def add_channels_last(trainer: L.Trainer) -> None:
    """Channels-last convolutions under mixed precision, unless a `ChannelsLast` callback is there already."""
    from audioclip.tasks.callbacks import ChannelsLast

    if is_mixed(trainer.precision) and not any(isinstance(cb, ChannelsLast) for cb in trainer.callbacks):
        trainer.callbacks.append(ChannelsLast())
