"""LightningCLI for the training phases: `audioclip fit --config conf/finetune-esc50.yaml --data.fold 3`.

Every YAML key is a constructor argument of a LightningModule / DataModule / Trainer, type-checked at parse time,
so a misspelled key or a wrong type fails before any data is read. The resolved configuration is written into
the run directory (`config.yaml`) and into W&B's run config.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import WandbLogger


class AudioCLIPCLI(LightningCLI):
    def before_fit(self) -> None:
        root = Path(self.trainer.default_root_dir)
        for callback in self.trainer.callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = str(root / "checkpoints")
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger):
                # the resolved config, so the W&B dashboard shows every setting of the run
                logger.experiment.config.update({"config": self.config.as_dict()}, allow_val_change=True)

    before_test = before_validate = before_fit

    def after_fit(self) -> None:
        """Test the checkpoint selected on the validation split and keep the metrics in the run directory."""
        # a datamodule without a test split (AudioSet without test_dir) says so through `has_test_split`
        if not self.trainer.interrupted and getattr(self.datamodule, "has_test_split", True):
            best = self.trainer.checkpoint_callback.best_model_path if self.trainer.checkpoint_callback else ""
            results = self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)
            if self.trainer.is_global_zero and results:
                out = Path(self.trainer.default_root_dir) / "test_metrics.json"
                out.write_text(json.dumps({"checkpoint": best, **results[0]}, indent=2) + "\n")
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger) and self.trainer.is_global_zero:
                logger.experiment.finish()  # flush the run now, also when the CLI is used from Python


def run_lightning_cli(argv: Sequence[str]) -> AudioCLIPCLI:
    # W&B stays offline unless the user chose a mode or logged in; `wandb sync` uploads later
    if "WANDB_MODE" not in os.environ and not os.environ.get("WANDB_API_KEY"):
        os.environ["WANDB_MODE"] = "offline"
    return AudioCLIPCLI(
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=list(argv),
        auto_configure_optimizers=False,
    )
