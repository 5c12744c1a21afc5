"""LightningCLI for the training phases: `audioclip fit --config conf/finetune-esc50.yaml --data.init_args.fold 3`.

Every YAML key is a constructor argument of a LightningModule / DataModule / Trainer / callback, type-checked at
parse time, so a misspelled key or a wrong type fails before any data is read (one line, `tasks/cli_errors.py`).
A phase file composes config groups through its `defaults:` list (`conf/data/*.yaml`, `conf/optim/*.yaml`, ...,
expanded here into `--config` files in that order, the phase file last) and overrides only what differs. The
resolved configuration is written into the run directory (`config.yaml`) and into W&B's run config.

Reliability (`tasks/callbacks.py`, `tasks/nonfinite.py`, `tasks/checkpoints.py`): checkpoints are written atomically
and read with `weights_only=True`; `last.ckpt` is written every `--last_checkpoint.every_n_train_steps` steps and on
SIGTERM / SIGUSR1; `--ckpt_path last` resumes the run directory's `last.ckpt` (or starts afresh when there is none)
and continues its W&B run. A bad setting is one line naming it, before any data is read. Only public Lightning and
jsonargparse interfaces are used (`tests/tasks/test_public_interfaces.py` checks it).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser
from lightning.pytorch.loggers import WandbLogger

from audioclip.data.batch import per_device_batch_size
from audioclip.storage import exists, is_url
from audioclip.tasks.auto_precision import Trainer as AutoPrecisionTrainer
from audioclip.tasks.auto_precision import add_channels_last
from audioclip.tasks.callbacks import BadDataLog, ResumeState, SaveOnSignal, StepCheckpoint, TestMetricsFile
from audioclip.tasks.checkpoints import RESUME_KEY, checkpoint_dir, last_checkpoint, read_resume_checkpoint
from audioclip.tasks.cli_errors import OneLineErrorParser, instantiation_error
from audioclip.tasks.distributed import ResumeAgreement, SyncBatchNormPlugin, smallest_batch_for_batchnorm
from audioclip.tasks.entry import expand_defaults
from audioclip.tasks.nonfinite import NonFiniteGuard
from audioclip.tasks.preflight import PreflightChecks
from audioclip.tasks.wandb_run import define_best_metric, is_wandb, run_name, start_run

SUBCOMMANDS = ("fit", "validate", "test", "predict")


def _import_short_names() -> None:
    """jsonargparse finds a short class name (`--model FinetuneModule`, `--data US8KDataModule`) only among the
    subclasses already imported; `audioclip.tasks` and `audioclip.data` import theirs on first use, so here, where
    Lightning is loaded anyway, every phase and every DataModule is."""
    import audioclip.data
    import audioclip.tasks

    for package, names in ((audioclip.tasks, audioclip.tasks.__all__), (audioclip.data, audioclip.data.__all__)):
        for name in names:
            if package is audioclip.tasks or name.endswith("DataModule"):
                getattr(package, name)


_import_short_names()
# run-safety callbacks: each a configuration group of its own (conf/trainer.yaml), instantiated by the CLI
CALLBACK_GROUPS = {
    "last_checkpoint": StepCheckpoint,
    "save_on_signal": SaveOnSignal,
    "nonfinite_guard": NonFiniteGuard,
    "metrics_file": TestMetricsFile,
}


def _resolve_ckpt_path(ckpt_path: str, root: str | Path) -> str | None:
    """`last` -> the run directory's `last.ckpt` (a file, or an object under a URL run root), or None (start afresh)
    when the run has none yet."""
    if ckpt_path == "last":
        last = last_checkpoint(root)
        return str(last) if exists(last) else None
    return ckpt_path


def _wandb_configs(trainer_config: Namespace) -> list[Namespace]:
    configs = trainer_config.get("logger")
    configs = configs if isinstance(configs, list) else [configs]
    return [c for c in configs if isinstance(c, Namespace) and is_wandb(c)]


def local_side(root: str | Path) -> Path:
    """Where a run whose root is an object-store URL keeps what only a local disk takes (W&B's run, `config.yaml`):
    `<WANDB_DIR>/<phase>-<run>`, W&B's own setting, by default `wandb/` in the working directory."""
    return Path(os.environ.get("WANDB_DIR") or "wandb") / run_name(str(root).split("://", 1)[-1])


def loggers_follow_run_dir(trainer_config: Namespace) -> None:
    """A W&B logger writes into the run directory and is named after it unless the configuration says otherwise,
    so a run's folder is given once, as `--trainer.default_root_dir` (WandbLogger's own save_dir default is `.`).
    W&B writes only to local disks: a run root on an object store keeps its W&B run in `local_side(root)`."""
    given = trainer_config.get("default_root_dir") or "."
    root = given if is_url(given) else Path(given)
    for config in _wandb_configs(trainer_config):
        init_args = config.get("init_args") or Namespace()
        if init_args.get("save_dir") in (None, "."):
            init_args["save_dir"] = str(local_side(root) if is_url(root) else root)
        if not init_args.get("name"):
            init_args["name"] = run_name(root)
        config["init_args"] = init_args


class AudioCLIPCLI(PreflightChecks):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for key, callback in CALLBACK_GROUPS.items():
            parser.add_lightning_class_args(callback, key)
        parser.add_argument(
            "--sync_batchnorm",
            type=bool,
            default=True,
            help="with more than one rank, BatchNorm normalises with the statistics of the global batch, so N ranks "
            "with batch B/N train like one with batch B (two small all-reduces per BatchNorm call)",
        )
        parser.add_argument(
            "--float32_matmul_precision",
            type=str,
            default="high",
            help="torch.set_float32_matmul_precision for fp32 runs on GPUs: 'high' lets matmuls and convolutions "
            "use TF32 (the fbsp front end always computes in IEEE fp32); 'highest' for bit-parity work",
        )

    def _settings(self, config: Namespace | None = None) -> Namespace:
        """The configuration of the running subcommand (the whole configuration without subcommands)."""
        config = self.config if config is None else config
        return config[self.subcommand] if self.subcommand else config

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Check `ckpt_path` before Lightning reads its hyper-parameters: `last` is resolved, a missing, truncated
        or unsafe file is one line naming it."""
        super().parse_arguments(parser, args)
        self._resume_run_id: str | None = None
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        loggers_follow_run_dir(config.trainer)
        if not config.get("ckpt_path"):
            return
        root = config.trainer.default_root_dir or "."
        config.ckpt_path = _resolve_ckpt_path(config.ckpt_path, root)
        if config.ckpt_path is None:
            print(f"audioclip: no {root}/checkpoints/last.ckpt yet: starting afresh", file=sys.stderr)
        elif "://" not in config.ckpt_path and config.ckpt_path not in ("best", "hpc"):  # else Lightning's
            self._resume_run_id = read_resume_checkpoint(config.ckpt_path).get(RESUME_KEY, {}).get("wandb_run_id")

    def before_instantiate_classes(self) -> None:
        """A resumed run continues the checkpoint's W&B run; Lightning's switches take out what they turn off."""
        settings = self._settings()
        if self._resume_run_id and self.subcommand == "fit":
            for config in _wandb_configs(settings.trainer):
                init_args = config.get("init_args") or Namespace()
                if not init_args.get("id"):
                    init_args["id"], init_args["resume"] = self._resume_run_id, init_args.get("resume") or "allow"
                config["init_args"] = init_args
        self.apply_lightning_switches(settings.trainer)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as error:
            raise instantiation_error(error) from None

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        settings = self._settings()
        precision = settings.float32_matmul_precision
        if precision not in ("highest", "high", "medium"):
            raise ValueError(f"float32_matmul_precision: one of highest, high, medium, got {precision!r}")
        torch.set_float32_matmul_precision(precision)
        if settings.sync_batchnorm:  # DDP applies it when fitting starts; one process never does
            plugins = self._settings(self.config_init).trainer.get("plugins") or []
            kwargs["plugins"] = [*(plugins if isinstance(plugins, list) else [plugins]), SyncBatchNormPlugin()]
        trainer = super().instantiate_trainer(**kwargs)
        # a checkpoint IO the user chose (e.g. asynchronous) is kept; only Lightning's default is replaced
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            from audioclip.tasks.checkpoints import AtomicCheckpointIO

            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        trainer.callbacks.extend([ResumeState(), BadDataLog(), ResumeAgreement(settings.get("ckpt_path"))])
        add_channels_last(trainer)
        return trainer

    def _preflight(self) -> None:
        """Settings that only make sense together, checked before any data is read or process started."""
        if str(self.trainer.precision) in ("16-true", "bf16-true"):
            raise ValueError(
                f"trainer.precision: {self.trainer.precision} casts the fbsp filter bank to half precision (its "
                "centre frequencies round off and the spectrogram is off by up to 100 dB): use "
                f"{str(self.trainer.precision).replace('true', 'mixed')}"
            )
        for name in ("batch_size", "eval_batch_size"):
            value = getattr(self.datamodule, name, None)
            if isinstance(value, int):
                try:
                    per_device = per_device_batch_size(value, self.trainer.world_size)
                except ValueError as error:
                    raise ValueError(f"data.{name}: {error}") from None
                if name == "batch_size" and self.subcommand == "fit":
                    smallest_batch_for_batchnorm(per_device, self.trainer.world_size, self._settings().sync_batchnorm)
        check = getattr(self.model, "check_fits_data", None)
        if callable(check):
            check(self.datamodule)

    def before_fit(self) -> None:
        self._preflight()
        root = self.trainer.default_root_dir
        for callback in self.trainer.callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = str(checkpoint_dir(root))
        wandb_configs = _wandb_configs(self._settings().trainer)
        for logger, config in zip([lg for lg in self.trainer.loggers if isinstance(lg, WandbLogger)], wandb_configs):
            if not self.trainer.is_global_zero:
                continue  # W&B runs on rank 0 only: elsewhere Lightning's experiment is a placeholder
            # the run is started here, named and organised (job type, group, tags), and the logger attaches to it
            start_run(config.get("init_args") or Namespace(), self.model, self.datamodule)
            # the resolved config, so the W&B dashboard shows every setting of the run
            logger.experiment.config.update({"config": self.config.as_dict()}, allow_val_change=True)
            if hasattr(self.model, "monitor"):
                define_best_metric(logger, self.model.monitor)

    before_test = before_validate = before_fit

    def after_fit(self) -> None:
        """Test the checkpoint selected on the validation split (`TestMetricsFile` keeps the metrics in the run
        directory)."""
        # a datamodule without a test split (AudioSet without test_dir) says so through `has_test_split`
        if not self.trainer.interrupted and getattr(self.datamodule, "has_test_split", True):
            # the phase's checkpoint callback is the one that monitors a metric (StepCheckpoint only writes last)
            selector = next((cb for cb in self.trainer.checkpoint_callbacks if cb.monitor), None)
            best = selector.best_model_path if selector else ""
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger) and self.trainer.is_global_zero:
                logger.experiment.finish()  # flush the run now, also when the CLI is used from Python


def _subcommand(name: str) -> Callable[[Sequence[str]], int]:
    def run(argv: Sequence[str]) -> int:
        run_lightning_cli([name, *argv])
        return 0

    run.__name__ = run.__qualname__ = name
    run.__doc__ = f"`audioclip {name} ...`: the `audioclip` command's entry (`audioclip.cli.COMMANDS`)."
    return run


fit, validate, test, predict = (_subcommand(name) for name in SUBCOMMANDS)


def run_lightning_cli(argv: Sequence[str]) -> AudioCLIPCLI:
    # argv is given on purpose (the `audioclip` command passes its own): Lightning's warning about it is noise
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended", category=UserWarning)
    # W&B stays offline unless the user chose a mode or logged in; `wandb sync` uploads later
    if "WANDB_MODE" not in os.environ and not os.environ.get("WANDB_API_KEY"):
        os.environ["WANDB_MODE"] = "offline"
    return AudioCLIPCLI(
        parser_class=OneLineErrorParser,
        trainer_class=AutoPrecisionTrainer,  # precision: auto
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=expand_defaults(argv),
        auto_configure_optimizers=False,
    )

