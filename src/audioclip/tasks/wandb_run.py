"""How a training run shows up in W&B: one self-contained run directory, organised the way W&B users filter runs.

- Media inside the run directory. W&B logs a `wandb.Table` as an artifact and copies its cells' audio and images
  (and the table itself) into an artifact staging folder, `$WANDB_DATA_DIR/artifacts/staging`, by default
  `~/.local/share/wandb/...`: outside the run, so a copied offline run lost its media (wandb/server#149). The staging
  folder of a run is `<run>/wandb/artifacts/staging` instead (W&B reads `WANDB_DATA_DIR` at every log call).
- `job_type` is the phase (`finetune-esc50`, `pretrain-audio`, ...), `group` one cross-validation (`make cv-*` gives
  all its folds one group) or one multi-stage experiment (the AudioSet phases of one `RUNS` folder), tags name the
  dataset, real or synthetic data, the model, the weight variant and the protocol (`models.lineage`, `data.provenance`).
- The validation metric that selects checkpoints is summarised by its best value and its last
  (`define_metric(summary="max,last")`), so the runs table sorts by the best epoch, not the last.

Whatever the user set on the logger (`--trainer.logger.init_args.group ...`, `job_type`, `tags`) is kept.
W&B docs: "Organize runs" (group, job_type, tags) and `wandb.Run.define_metric`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audioclip.data.provenance import describe_data
from audioclip.outputs import stage_media_in

if TYPE_CHECKING:  # `audioclip report` stages its media here too, without importing Lightning
    from lightning.pytorch.loggers import WandbLogger



def phase_name(model: Any, datamodule: Any) -> str:
    """The phase a (LightningModule, DataModule) pair runs, named as its `make` target."""
    kind = type(model).__name__
    data = describe_data(datamodule)["dataset"]
    dataset = data if data in ("esc50", "us8k") else None
    if kind == "AudioPretrainModule":
        if getattr(model.hparams, "multilabel", True):
            return "pretrain-audio"
        return f"finetune-{dataset}-audio-head" if dataset else "finetune-audio-head"
    if kind == "FinetuneModule":
        return f"finetune-{dataset}" if dataset else "finetune"
    return {"PartialTrainingModule": "train-partial", "FullTrainingModule": "train-full"}.get(kind, kind)


def run_tags(model: Any, datamodule: Any) -> list[str]:
    """Dataset, real/synthetic data, model, weight variant and protocol, as `key:value` tags."""
    data = describe_data(datamodule)
    variant = getattr(model, "produces", None) or getattr(model, "init_lineage", {}).get("variant", "other")
    tags = {
        "dataset": data["dataset"],
        "data": data["data"],
        "model": getattr(model.hparams, "model", None),
        "variant": variant,
        "protocol": data["protocol"],
    }
    return [f"{key}:{value}" for key, value in tags.items() if value]


def default_group(job_type: str, datamodule: Any, run_dir: Path) -> str:
    """Folds of one phase into one group; the AudioSet phases of one runs folder (one chain of stages) into one;
    anything else (own data without folds) by its phase."""
    data = describe_data(datamodule)
    if data["test_fold"] is not None:
        return f"{job_type}-folds"
    if data["dataset"] == "audioset":
        # runs/<phase>/<run>: the stages of one experiment share the runs folder (the Makefile's RUNS=)
        return f"audioset-{run_dir.resolve().parent.parent.name}"
    return job_type


def run_name(root: str | Path) -> str:
    """The W&B name of the run in `root`: `<phase>-<run>`, e.g. runs/finetune-esc50/fold3 -> finetune-esc50-fold3."""
    root = Path(root).absolute()
    return f"{root.parent.name}-{root.name}"


def is_wandb(logger_config: Mapping[str, Any]) -> bool:
    """Whether a logger's configuration (`class_path` + `init_args`) is Lightning's W&B logger."""
    return str(logger_config.get("class_path", "")).endswith("WandbLogger")


# WandbLogger arguments that are the logger's own, not `wandb.init`'s
_LOGGER_ONLY = {"save_dir", "version", "offline", "anonymous", "log_model", "prefix", "experiment",
                "checkpoint_name", "add_file_policy"}  # fmt: skip


def init_kwargs(init_args: Mapping[str, Any]) -> dict[str, Any]:
    """What Lightning's WandbLogger would pass to `wandb.init` for these arguments, without the deprecated
    `anonymous` (which W&B 0.31 answers with a warning a user cannot act on)."""
    kwargs = {k: v for k, v in dict(init_args).items() if k not in _LOGGER_ONLY and v is not None}
    kwargs["project"] = kwargs.get("project") or os.environ.get("WANDB_PROJECT", "lightning_logs")
    kwargs["dir"] = init_args.get("save_dir") or init_args.get("dir")
    kwargs["id"] = init_args.get("version") or init_args.get("id")
    kwargs.setdefault("resume", "allow")
    if init_args.get("offline"):
        kwargs["mode"] = "offline"
    return kwargs


def run_settings(init_args: Mapping[str, Any], model: Any, datamodule: Any) -> dict[str, Any]:
    """The `wandb.init` arguments of a training run: the logger's configuration, plus job type, group and tags
    unless the configuration set them; media are staged inside the run directory from now on."""
    kwargs = init_kwargs(init_args)
    run_dir = Path(kwargs["dir"] or ".")
    stage_media_in(run_dir)
    kwargs["job_type"] = kwargs.get("job_type") or phase_name(model, datamodule)
    kwargs["group"] = kwargs.get("group") or default_group(kwargs["job_type"], datamodule, run_dir)
    given = list(kwargs.get("tags") or [])
    kwargs["tags"] = given + [tag for tag in run_tags(model, datamodule) if tag not in given]
    return kwargs


def start_run(init_args: Mapping[str, Any], model: Any, datamodule: Any) -> Any:
    """Start the W&B run of a training run (rank 0) with `run_settings`. Lightning's WandbLogger then attaches to
    this run (it reuses `wandb.run`), so the run's identity is fixed here, through `wandb.init`'s public arguments."""
    import wandb

    # the logger reuses this run and says so; that is the point
    warnings.filterwarnings("ignore", message="There is a wandb run already in progress")
    run = wandb.init(**run_settings(init_args, model, datamodule))
    # the x-axis Lightning's logger defines for the runs it starts itself
    run.define_metric("trainer/global_step")
    run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
    return run


def define_best_metric(logger: WandbLogger, monitor: tuple[str, str]) -> None:
    """The checkpoint-selecting metric's best (max or min, as the checkpoint callback's mode) and last values."""
    metric, mode = monitor
    logger.experiment.define_metric(metric, summary=f"{mode},last")
