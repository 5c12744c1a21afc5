"""LightningCLI for the training phases: `audioclip fit --config conf/finetune-esc50.yaml --data.fold 3`.

Every YAML key is a constructor argument of a LightningModule / DataModule / Trainer, type-checked at parse time,
so a misspelled key or a wrong type fails before any data is read. The resolved configuration is written into
the run directory (`config.yaml`) and into W&B's run config.

Reliability (`audioclip.tasks.callbacks`, `audioclip.tasks.checkpoints`): checkpoints are written
atomically and read with `weights_only=True`; `last.ckpt` is written every `--last_checkpoint.every_n_train_steps`
steps and on SIGTERM / SIGUSR1; `--ckpt_path last` resumes the run directory's `last.ckpt` (or starts afresh when
there is none) and continues its W&B run. A bad setting is one line naming it, before any data is read.
"""

from __future__ import annotations

import json
import os
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch
from jsonargparse import Namespace
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser
from lightning.pytorch.loggers import WandbLogger

from audioclip.data.batch import per_device_batch_size
from audioclip.models.lineage import result_fields
from audioclip.tasks.auto_precision import Trainer as AutoPrecisionTrainer
from audioclip.tasks.auto_precision import add_channels_last
from audioclip.tasks.callbacks import BadDataLog, ResumeState, SaveOnSignal, StepCheckpoint
from audioclip.tasks.checkpoints import (
    RESUME_KEY,
    AtomicCheckpointIO,
    checkpoint_dir,
    last_checkpoint,
    read_resume_checkpoint,
)
from audioclip.tasks.distributed import (
    SyncBatchNormPlugin,
    check_shared_run_dir,
    decide_resume,
    smallest_batch_for_batchnorm,
)
from audioclip.tasks.preflight import PreflightChecks
from audioclip.tasks.wandb_run import define_best_metric, prepare_wandb_run


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def one_line_error(message: str) -> str:
    """jsonargparse's nested report as one line: the setting's key path and the innermost problem.

    E.g. `data.batch_size: Expected a <class 'int'>. Got value: abc (in audioclip.data.ESC50DataModule)`.
    """
    lines = [line for line in message.strip().splitlines() if line.strip()]
    if len(lines) <= 1:
        return message.strip()
    key = ".".join(re.findall(r'Parser key "([^"]+)"', message))
    block = lines
    starts = [i for i, line in enumerate(lines) if line.strip() == "Errors:"]
    if starts:  # the first alternative of a Union is the class or type the setting was meant to be
        first = starts[0] + 1
        end = next((i for i in range(first + 1, len(lines)) if _indent(lines[i]) <= _indent(lines[first])), None)
        block = lines[first:end]
    details = [line for line in block if not line.strip().startswith(("Parser key", "- Problem with given"))]
    problem = max(details or block, key=_indent).strip().removeprefix("- ")
    given = re.search(r"^\s*Given value: (.*)$", message, re.MULTILINE)
    if given and not given[1].startswith("NestedArg(") and given[1] not in problem:
        problem += f", got {given[1]!r}"
    class_path = re.search(r"class_path '([^']+)'", message)
    if class_path and class_path[1] not in problem:
        problem += f" (in {class_path[1]})"
    return f"{key}: {problem}" if key else problem


class OneLineErrorParser(LightningArgumentParser):
    """A parse error is one line naming the setting, not the usage text and jsonargparse's nested report.

    Abbreviated options are refused: `--trainer.max_epoch` is a misspelling, not `--trainer.max_epochs`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        # jsonargparse tries alternatives with exit_on_error off and catches their errors
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG"):
            super().error(message, ex)
        print(f"audioclip: error: {one_line_error(message)} (see --help)", file=sys.stderr)
        sys.exit(2)


def _instantiation_error(error: BaseException) -> BaseException:
    """What a class's `__init__` raised (e.g. `fold must be in 1..5`), out of jsonargparse's report around it."""
    while str(error).startswith(("Does not validate", "Problem with given class_path", "Parser key")):
        inner = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
        if inner is None:
            return ValueError(one_line_error(str(error)))
        error = inner
    return error


def _resolve_ckpt_path(ckpt_path: str, root: Path) -> str | None:
    """`last` -> the run directory's `last.ckpt`, or None (start afresh) when the run has none yet."""
    if ckpt_path == "last":
        last = last_checkpoint(root)
        return str(last) if last.is_file() else None
    return ckpt_path


def _resume_wandb(logger_config: Any, run_id: str) -> None:
    """Point every configured WandbLogger at the checkpoint's W&B run, unless the config names another run."""
    configs = logger_config if isinstance(logger_config, list) else [logger_config]
    for config in configs:
        if isinstance(config, Namespace) and str(config.get("class_path", "")).endswith("WandbLogger"):
            init_args = config.get("init_args") or Namespace()
            if not init_args.get("id"):
                init_args["id"], init_args["resume"] = run_id, init_args.get("resume") or "allow"
            config["init_args"] = init_args


def run_name(root: Path) -> str:
    """The W&B name of the run in `root`: `<phase>-<run>`, e.g. runs/finetune-esc50/fold3 -> finetune-esc50-fold3."""
    root = Path(root).absolute()
    return f"{root.parent.name}-{root.name}"


def loggers_follow_run_dir(trainer_config: Namespace) -> None:
    """A W&B logger writes into the run directory and is named after it unless the configuration says otherwise,
    so a run's folder is given once, as `--trainer.default_root_dir` (WandbLogger's own save_dir default is `.`)."""
    root = Path(trainer_config.get("default_root_dir") or ".")
    configs = trainer_config.get("logger")
    for config in configs if isinstance(configs, list) else [configs]:
        if isinstance(config, Namespace) and str(config.get("class_path", "")).endswith("WandbLogger"):
            init_args = config.get("init_args") or Namespace()
            if init_args.get("save_dir") in (None, "."):
                init_args["save_dir"] = str(root)
            if not init_args.get("name"):
                init_args["name"] = run_name(root)
            config["init_args"] = init_args


class AudioCLIPCLI(PreflightChecks):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(StepCheckpoint, "last_checkpoint")
        parser.add_lightning_class_args(SaveOnSignal, "save_on_signal")
        parser.add_argument(
            "--skip_nonfinite_loss",
            type=bool,
            default=False,
            help="skip (and count) a training step whose loss or gradient is NaN/Inf instead of stopping the run",
        )
        parser.add_argument(
            "--check_every_n_steps",
            type=int,
            default=10,
            help="read the NaN/Inf flags (and under DDP the signal decision, one all-reduce) every N steps: a NaN "
            "stops the run at most N - 1 steps late (without --skip_nonfinite_loss, which decides every step)",
        )
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
        root = Path(config.trainer.default_root_dir or ".")
        config.ckpt_path = _resolve_ckpt_path(config.ckpt_path, root)
        if config.ckpt_path is None:
            print(f"audioclip: no {root}/checkpoints/last.ckpt yet: starting afresh", file=sys.stderr)
        elif "://" not in config.ckpt_path and config.ckpt_path not in ("best", "hpc"):  # else Lightning's
            self._resume_run_id = read_resume_checkpoint(config.ckpt_path).get(RESUME_KEY, {}).get("wandb_run_id")

    def before_instantiate_classes(self) -> None:
        """A resumed run continues the checkpoint's W&B run."""
        if self._resume_run_id and self.subcommand == "fit":
            _resume_wandb(self.config.fit.trainer.get("logger"), self._resume_run_id)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as error:
            raise _instantiation_error(error) from None

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        precision = self._get(self.config, "float32_matmul_precision")
        if precision not in ("highest", "high", "medium"):
            raise ValueError(f"float32_matmul_precision: one of highest, high, medium, got {precision!r}")
        torch.set_float32_matmul_precision(precision)
        trainer = super().instantiate_trainer(**kwargs)
        if trainer.world_size > 1 and self._get(self.config, "sync_batchnorm"):
            trainer.strategy._layer_sync = SyncBatchNormPlugin(trainer.strategy.root_device.type)
        self._defer_resume_to_rank_zero(trainer)
        # a checkpoint IO the user chose (e.g. asynchronous) is kept; only Lightning's default is replaced
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        trainer.callbacks.extend([ResumeState(), BadDataLog()])
        add_channels_last(trainer)
        return trainer

    def _defer_resume_to_rank_zero(self, trainer: Trainer) -> None:
        """Under DDP, which checkpoint to resume from (if any) is rank 0's decision, taken once the process group is
        up (Lightning restores right after it), and the run directory must be one every rank sees."""
        connector = trainer._checkpoint_connector
        restore = connector._restore_modules_and_callbacks

        def restore_decided_by_rank_zero(checkpoint_path: Any = None, *args: Any, **kwargs: Any) -> None:
            if trainer.state.fn == "fit":
                check_shared_run_dir(trainer)
                checkpoint_path = decide_resume(trainer, checkpoint_path)
            restore(checkpoint_path, *args, **kwargs)

        connector._restore_modules_and_callbacks = restore_decided_by_rank_zero

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
                    sync = bool(self._get(self.config, "sync_batchnorm"))
                    smallest_batch_for_batchnorm(per_device, self.trainer.world_size, sync)
        if hasattr(self.model, "skip_nonfinite_loss"):
            self.model.skip_nonfinite_loss = self._get(self.config, "skip_nonfinite_loss")
        if hasattr(self.model, "check_every_n_steps"):
            every = self._get(self.config, "check_every_n_steps")
            if every < 1:
                raise ValueError(f"check_every_n_steps: must be >= 1, got {every}")
            self.model.check_every_n_steps = every

    def before_fit(self) -> None:
        self._preflight()
        root = Path(self.trainer.default_root_dir)
        for callback in self.trainer.callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = str(checkpoint_dir(root))
        for logger in self.trainer.loggers:
            # W&B runs on rank 0 only: elsewhere Lightning's experiment is a placeholder
            if isinstance(logger, WandbLogger) and self.trainer.is_global_zero:
                prepare_wandb_run(logger, self.model, self.datamodule)  # media, job type, group, tags
                # the resolved config, so the W&B dashboard shows every setting of the run
                logger.experiment.config.update({"config": self.config.as_dict()}, allow_val_change=True)
                if hasattr(self.model, "monitor"):
                    define_best_metric(logger, self.model.monitor)

    before_test = before_validate = before_fit

    def after_fit(self) -> None:
        """Test the checkpoint selected on the validation split and keep the metrics in the run directory."""
        # a datamodule without a test split (AudioSet without test_dir) says so through `has_test_split`
        if not self.trainer.interrupted and getattr(self.datamodule, "has_test_split", True):
            # the phase's checkpoint callback is the one that monitors a metric (StepCheckpoint only writes last)
            selector = next((cb for cb in self.trainer.checkpoint_callbacks if cb.monitor), None)
            best = selector.best_model_path if selector else ""
            results = self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)
            if self.trainer.is_global_zero and results:
                out = Path(self.trainer.default_root_dir) / "test_metrics.json"
                record = {"checkpoint": best, **results[0]}
                if hasattr(self.model, "lineage"):  # which variant, data, folds and protocol (audioclip.models.lineage)
                    lineage = self.model.lineage()
                    record.update(result_fields(lineage, lineage["model"], lineage["steps"][-1]))
                    record["result"] = self.model.scores_against
                out.write_text(json.dumps(record, indent=2) + "\n")
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger) and self.trainer.is_global_zero:
                logger.experiment.finish()  # flush the run now, also when the CLI is used from Python


def fit(argv: Sequence[str]) -> int:
    """`audioclip fit ...`: the `audioclip` command's entry (`audioclip.cli.COMMANDS`)."""
    run_lightning_cli(["fit", *argv])
    return 0


def validate(argv: Sequence[str]) -> int:
    run_lightning_cli(["validate", *argv])
    return 0


def test(argv: Sequence[str]) -> int:
    run_lightning_cli(["test", *argv])
    return 0


def predict(argv: Sequence[str]) -> int:
    run_lightning_cli(["predict", *argv])
    return 0


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
        args=list(argv),
        auto_configure_optimizers=False,
    )
