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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audioclip.data.provenance import describe_data

if TYPE_CHECKING:  # `audioclip report` stages its media here too, without importing Lightning
    from lightning.pytorch.loggers import WandbLogger

STAGING_ENV = "WANDB_DATA_DIR"


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


def stage_media_in(run_dir: str | Path) -> None:
    """W&B stages what the runs started from now on log (tables, their audio and images) in `<run_dir>/wandb/`."""
    os.environ[STAGING_ENV] = str((Path(run_dir) / "wandb").resolve())


def prepare_wandb_run(logger: WandbLogger, model: Any, datamodule: Any) -> None:
    """Before the W&B run starts: staging inside the run directory; job type, group and tags unless set."""
    init = logger._wandb_init  # what Lightning passes to wandb.init when the run starts
    run_dir = Path(init.get("dir") or ".")
    stage_media_in(run_dir)
    if not init.get("job_type"):
        init["job_type"] = phase_name(model, datamodule)
    if not init.get("group"):
        init["group"] = default_group(init["job_type"], datamodule, run_dir)
    given = list(init.get("tags") or [])
    init["tags"] = given + [tag for tag in run_tags(model, datamodule) if tag not in given]


def define_best_metric(logger: WandbLogger, monitor: tuple[str, str]) -> None:
    """The checkpoint-selecting metric's best (max or min, as the checkpoint callback's mode) and last values."""
    metric, mode = monitor
    logger.experiment.define_metric(metric, summary=f"{mode},last")
