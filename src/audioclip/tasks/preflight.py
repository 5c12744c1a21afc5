"""Checks `audioclip fit` makes once the arguments are parsed, before any class is built or W&B run started.

- A run directory that already holds checkpoints is another run's: training into it without `--ckpt_path`
  (`RESUME=1`) would overwrite its `last.ckpt` and mix two runs' `best-*.ckpt` files in one folder.
- The run directory must be writable (`RUNS=`, `--trainer.default_root_dir`): a run that cannot save its first
  checkpoint should not train for an hour first.
- Lightning's own switches: no logger (`--trainer.logger false`), no checkpointing
  (`--trainer.enable_checkpointing false`), `fast_dev_run`, `limit_*_batches`, `max_steps`. The callbacks that need
  a logger or that write checkpoints are left out when those are off, instead of Lightning refusing the run.

Known messages a user cannot act on are silenced one by one (`quiet_known_messages`), never all warnings; the README
lists what remains.

See docs/reliability.md.
"""

from __future__ import annotations

import importlib
import logging
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from audioclip.outputs import check_writable_dir, make_dir
from audioclip.storage import check_writable, glob, is_url
from audioclip.tasks.checkpoints import checkpoint_dir


def earlier_checkpoints(root: str | Path) -> list[str | Path]:
    """The checkpoint files a run directory (a folder, or an object-store URL) already holds
    (`<root>/checkpoints/*.ckpt`)."""
    return glob(checkpoint_dir(root), "*.ckpt")


def refuse_earlier_run(root: str | Path) -> None:
    """ValueError when `root` holds another run's checkpoints and the user did not ask to resume it."""
    found = earlier_checkpoints(root)
    if found:
        raise ValueError(
            f"{root}: holds the checkpoints of an earlier run ({len(found)} in {checkpoint_dir(root)}); continue it "
            f"with RESUME=1 (--ckpt_path last), or choose another run directory (RUNS=, --trainer.default_root_dir)"
        )


def _disabled(value: Any) -> bool:
    return value is False or value == [] or value is None


def _class_of(config: Any) -> type | None:
    """The class a callback's configuration (`class_path` + `init_args`) names, or None."""
    path = config.get("class_path") if isinstance(config, Namespace) else None
    if not path:
        return None
    module, _, name = str(path).rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None  # jsonargparse names a class that does not exist itself


def switched_off(trainer_config: Namespace) -> list[str]:
    """Take out of the trainer's configured callbacks (`trainer_config.callbacks`) what Lightning's switches turn off;
    the class paths taken out.

    `LearningRateMonitor` needs a logger: without one it goes. `enable_checkpointing: false` means no checkpoint
    is written: every configured `ModelCheckpoint` goes (Lightning would refuse the run), the phase's own checkpoint
    callback is left out at fit time (`AudioCLIPTask.configure_callbacks`) and `StepCheckpoint` writes nothing.
    """
    no_logger = _disabled(trainer_config.get("logger", True)) or bool(trainer_config.get("fast_dev_run"))
    # fast_dev_run: Lightning's ModelCheckpoint skips its saves, but not `save_last` at the end of training
    no_checkpoints = trainer_config.get("enable_checkpointing") is False or bool(trainer_config.get("fast_dev_run"))
    given = trainer_config.get("callbacks") or []
    kept, dropped = [], []
    for config in given if isinstance(given, list) else [given]:
        cls = _class_of(config)
        needs_logger = cls is not None and issubclass(cls, LearningRateMonitor)
        writes_checkpoints = cls is not None and issubclass(cls, ModelCheckpoint)
        off = (no_logger and needs_logger) or (no_checkpoints and writes_checkpoints)
        (dropped if off else kept).append(config)
    trainer_config["callbacks"] = kept
    for config in dropped:
        rank_zero_info(f"{config.get('class_path')} left out: its switch is off (logger / enable_checkpointing)")
    return [str(config.get("class_path")) for config in dropped]


def check_config_files(argv: Sequence[str]) -> None:
    """Every `--config FILE` is readable YAML; ValueError naming the file and the place (jsonargparse names only
    `<unicode string>`)."""
    for i, arg in enumerate(argv):
        path = argv[i + 1] if arg == "--config" and i + 1 < len(argv) else arg.removeprefix("--config=")
        if path == arg and not arg.startswith("--config="):
            continue
        if not Path(path).is_file():
            continue  # jsonargparse's own message names a missing file
        try:
            yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ValueError(f"--config {path}: not valid YAML ({where}{problem})") from None


class _DropLightningTips(logging.Filter):
    """Lightning's advertisements for its cloud products (`💡 Tip: ... litlogger` / `litmodels`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def quiet_known_messages() -> None:
    """Silence the messages of a training run that a user cannot act on, each by its text."""
    # torch 2.11 deprecated LeafSpec; Lightning's own `_pytree.py` still uses it (nothing to change on our side)
    warnings.filterwarnings("ignore", message=re.escape("`isinstance(treespec, LeafSpec)` is deprecated"))
    # the frozen CLIP towers (and BatchNorm statistics of frozen parts) are in eval mode on purpose
    # (`tasks.base.freeze`, kept by the phases' `train()`); Lightning warns of any module in eval mode at the start
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    # under bf16-mixed (precision auto's choice on bf16 hardware) the model summary sizes parameters as fp32, which is
    # right: mixed precision keeps the parameters in fp32
    warnings.filterwarnings("ignore", message=r"Precision bf16-mixed is not supported by the model summary")
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropLightningTips) for f in rank_zero.filters):
        rank_zero.addFilter(_DropLightningTips())


class PreflightChecks(LightningCLI):
    """A LightningCLI layer with the checks above; `AudioCLIPCLI` derives from it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        quiet_known_messages()
        check_config_files(kwargs.get("args") or [])
        super().__init__(*args, **kwargs)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        # noted before `--ckpt_path last` is resolved (to nothing when the run has no last.ckpt yet)
        self._resume_requested = bool(subcommand and self.config[subcommand].get("ckpt_path"))

    def _check_run_directory(self) -> None:
        config = self.config.fit
        trainer = config.trainer
        root = trainer.default_root_dir or "."
        if is_url(root):  # an object store: a missing bucket or refused credentials before anything is built
            check_writable(root, "RUNS= or --trainer.default_root_dir")
        elif trainer.get("fast_dev_run"):
            make_dir(root, "RUNS= or --trainer.default_root_dir")  # only the test metrics go there
        else:
            check_writable_dir(root, "RUNS= or --trainer.default_root_dir")
        if trainer.get("fast_dev_run"):
            return  # no logger, no checkpoint: nothing of an earlier run is overwritten
        for logger in trainer.logger if isinstance(trainer.logger, list) else [trainer.logger]:
            save_dir = logger.get("init_args", {}).get("save_dir") if isinstance(logger, Namespace) else None
            if save_dir:
                check_writable_dir(save_dir, "RUNS= or --trainer.logger.init_args.save_dir")
        if trainer.get("enable_checkpointing") is not False and not self._resume_requested:
            refuse_earlier_run(root)

    def instantiate_classes(self) -> None:
        """Outputs are checked after the settings (`ckpt_path` included) and before any class is built, any W&B run
        started or any data decoded."""
        if self.subcommand == "fit":
            self._check_run_directory()
        super().instantiate_classes()
        # the decoded cache next to the dataset: the DataModule knows where it goes
        output_dirs = getattr(self.datamodule, "output_dirs", None)
        if self.subcommand == "fit" and callable(output_dirs):
            for directory, setting in output_dirs().items():
                check_writable_dir(directory, setting)
        if self.subcommand == "fit" and not is_url(self.trainer.default_root_dir):
            # W&B looks for the git repository (the run's commit) from its `dir`: it must exist when the run starts
            make_dir(self.trainer.default_root_dir, "RUNS= or --trainer.default_root_dir")

    def apply_lightning_switches(self, trainer_config: Namespace) -> None:
        """`switched_off`, before anything is built."""
        switched_off(trainer_config)
