"""What every training phase shares: the model from the registry, `init_from`, the parameter groups and the
optimiser handed in from the configuration, the fbsp gradient rule, the lineage and the checkpoint that selects.

Hyper-parameters (Guzhov et al., "AudioCLIP", section 4.3): SGD with Nesterov momentum 0.9, weight decay 5e-4,
exponential learning-rate decay per epoch. They are said once, in the configuration (`conf/optim/sgd.yaml`, the
phase files override the learning rate and decay); a phase only says its parameter groups: as in the reference, the
fbsp filter-bank parameters and the logit scales form a group without weight decay.

Run safety (NaN/Inf guard, saving on signals, the metrics file) lives in callbacks (`tasks/callbacks.py`,
`tasks/nonfinite.py`), listed in `conf/trainer.yaml`: a phase knows none of them. docs/design.md has the whole picture.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from audioclip.data.provenance import describe_data
from audioclip.models import AUDIOCLIP, AudioCLIP, create_model, get_spec
from audioclip.models.fbsp import normalize_fbsp_grads_
from audioclip.models.lineage import LINEAGE_KEY, weights_lineage
from audioclip.models.pretrained import WeightsError, load_weights
from audioclip.tasks.checkpoints import checkpoint_dir
from audioclip.tasks.entry import missing_weights_file

log = logging.getLogger(__name__)


def no_weight_decay(name: str) -> bool:
    """The fbsp filter bank and the logit scales train without weight decay (the reference's parameter groups)."""
    return ".fbsp." in f".{name}" or name.split(".")[-1].startswith("logit_scale")


def optimizer_group(path: str | Path, **overrides: Any) -> dict[str, Any]:
    """`optimizer=` and `scheduler=` for a phase built in Python, read from an optimiser group file of the
    configuration (e.g. `conf/optim/sgd.yaml`), so the hyper-parameters stay said once, there. `overrides` replace the
    optimiser's or the scheduler's argument of that name (`lr=0.1`, `gamma=0.5`).

        FinetuneModule(model="audioclip-tiny", **optimizer_group("conf/optim/sgd.yaml", lr=0.01))
    """
    import yaml

    group = yaml.safe_load(Path(path).read_text())["model"]["init_args"]
    out = {}
    for name in ("optimizer", "scheduler"):
        if not group.get(name):
            continue
        module, _, cls = group[name]["class_path"].rpartition(".")
        args = dict(group[name].get("init_args") or {})
        args.update({k: v for k, v in overrides.items() if k in args})
        out[name] = functools.partial(getattr(importlib.import_module(module), cls), **args)
    unknown = set(overrides) - {k for f in out.values() for k in f.keywords}
    if unknown:
        raise ValueError(f"{path}: no optimiser or scheduler argument named {', '.join(sorted(unknown))}")
    return out


def require_family(phase: str, model: str, family: str, hint: str = "") -> None:
    """A phase that trains one kind of registered model refuses the other by name, before anything is built."""
    if get_spec(model).family == family:
        return
    if family == AUDIOCLIP:
        raise ValueError(f"model: {phase} needs an AudioCLIP model, got {model!r}{hint}")
    raise ValueError(f"model: {phase} trains a standalone audio head, not {model!r}{hint}")


class AudioCLIPTask(L.LightningModule):
    """Base LightningModule: builds `model` by registry name and optionally loads `init_from` weights.

    Args:
        model: registered model name (`audioclip`, `audioclip-tiny`, `esresnext-fbsp`, ...).
        init_from: weights to start from: the previous phase's checkpoint, a state dict, or an official tag
            (`full`, `partial`, `esrnxfbsp`, `clip-rn50`). Not the same as `--ckpt_path`, which resumes a run.
        optimizer: the optimiser, given the parameter groups (the configuration's `class_path` + `init_args`,
            e.g. `torch.optim.SGD`); required for training.
        scheduler: the learning-rate schedule, given the optimiser, stepped once per epoch; None: constant.
        template: text template for class names, e.g. "{}" (the reference's) or "the sound of {}".
    """

    def __init__(
        self,
        model: str = "audioclip",
        init_from: str | None = None,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        template: str = "{}",
    ) -> None:
        super().__init__()
        # the optimiser and schedule are callables: they live in the run's config.yaml, not in the checkpoint
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.optimizer, self.scheduler = optimizer, scheduler
        self.model = self.build_model()
        content = self._init_weights(init_from) if init_from else None
        self.init_lineage = weights_lineage(init_from, content)

    # the model variant this phase makes (`audioclip.models.lineage`); None: the variant of `init_from` is kept
    produces: str | None = None
    # what the test scores are against: the class names as `text` (zero-shot style), or a classifier's `labels`
    scores_against: str = "text"
    # the validation metric that selects checkpoints, and whether higher is better
    monitor: tuple[str, str] = ("val/loss", "min")

    @property
    def attached_trainer(self) -> L.Trainer | None:
        """The Trainer running this module, or None outside one (Lightning's `trainer` raises then)."""
        try:
            return self.trainer
        except RuntimeError:
            return None

    def build_model(self) -> torch.nn.Module:
        """The registered model `hparams.model` (a phase that sizes it otherwise says so here)."""
        return create_model(self.hparams.model)

    def lineage(self) -> dict:
        """The lineage of the weights this run trains: its start, plus this run's step (phase, data, protocol)."""
        steps = list(self.init_lineage["steps"])
        datamodule = getattr(self.attached_trainer, "datamodule", None)
        if datamodule is not None:
            steps.append({"phase": type(self).__name__, **describe_data(datamodule)})
        variant = self.produces or self.init_lineage["variant"]
        return {"variant": variant, "model": self.hparams.model, "origin": self.init_lineage["origin"], "steps": steps}

    def _init_weights(self, init_from: str, fresh: tuple[str, ...] = ()) -> Mapping[str, Any]:
        """Load `init_from` strictly; keys starting with a `fresh` prefix keep their new initialisation. Returns the
        file's content (read once: its lineage is read from it too)."""
        if missing_weights_file(init_from):  # a URL (s3://, hf://) or ~/... is the weight reader's to resolve
            raise WeightsError(f"init_from: {init_from}: no such file")
        try:
            weights = load_weights(self.model, init_from, fresh=fresh)
        except WeightsError as error:
            raise WeightsError(f"init_from: {error} (model: {self.hparams.model})") from error
        log.info("initialised %s from %s", self.hparams.model, init_from)
        return weights.content

    @property
    def clip_model(self) -> AudioCLIP:
        if not isinstance(self.model, AudioCLIP):
            raise TypeError(f"{type(self).__name__} needs an AudioCLIP model, got {self.hparams.model!r}")
        return self.model

    def configure_callbacks(self):
        metric, mode = self.monitor
        # no checkpoint under enable_checkpointing=False or fast_dev_run; at `test` after `fit` the one attached
        # for fit is kept (it knows the best path), instead of Lightning's note that a new one overrides it
        if self.trainer.fast_dev_run or not self.trainer.checkpoint_callbacks:
            return []
        if any(cb.monitor == metric for cb in self.trainer.checkpoint_callbacks):
            return []
        name = metric.replace("/", "_")
        return [
            ModelCheckpoint(
                dirpath=checkpoint_dir(self.trainer.default_root_dir),
                monitor=metric,
                mode=mode,
                save_last=True,
                auto_insert_metric_name=False,
                enable_version_counter=False,  # last.ckpt is always the newest, for RESUME=1
                filename=f"best-epoch{{epoch}}-step{{step}}-{name}{{{metric}:.4f}}",
            )
        ]

    def param_groups(self) -> list[dict]:
        """The trainable parameters: one group with the optimiser's weight decay, one without (`no_weight_decay`)."""
        params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        groups = [
            {"params": [p for n, p in params if not no_weight_decay(n)]},
            {"params": [p for n, p in params if no_weight_decay(n)], "weight_decay": 0.0},
        ]
        return [g for g in groups if g["params"]]

    def configure_optimizers(self):
        if self.optimizer is None:
            raise ValueError(
                "model.optimizer: not set; the phase configs take it from conf/optim/sgd.yaml (SGD, Nesterov momentum "
                "0.9, weight decay 5e-4); in Python pass e.g. optimizer=functools.partial(torch.optim.SGD, lr=1e-4)"
            )
        optimizer = self.optimizer(self.param_groups())
        if self.scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler(optimizer), "interval": "epoch"}}

    def training_loss(self, batch: dict) -> torch.Tensor:
        """The loss of one training batch: the one thing the phases' training steps differ in."""
        raise NotImplementedError

    def training_step(self, batch, batch_idx):
        loss = self.training_loss(batch)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["audio"]))
        return loss

    def on_train_batch_start(self, batch, batch_idx) -> None:
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """The fbsp gradient rule: Lightning calls this after DDP has averaged the gradients and after a GradScaler
        has unscaled them, which is where the reference's per-filter-bank normalisation (divide by the infinity
        norm) belongs."""
        normalize_fbsp_grads_(self.model)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # read back by `audioclip.models.lineage.weights_lineage` when a later phase or an evaluation starts from it
        checkpoint[LINEAGE_KEY] = self.lineage()

    def tokens(self, texts: list[str]) -> torch.Tensor:
        return self.clip_model.tokenize(texts, self.hparams.template)
