"""The standalone audio head, ESResNeXt-fbsp (Guzhov et al., 2021, sections 3.2 and 4.3): pretrained on AudioSet as a
527-class multi-label classifier (`make pretrain-audio`), or fine-tuned with a new single-label classifier on ESC-50 /
UrbanSound8K (Tables 1 and 3, "Audio-Head" rows; `make finetune-esc50-audio-head`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from audioclip.constants import AUDIOSET_CLASSES
from audioclip.evaluation.metrics import AudioSetMAP
from audioclip.models import AUDIO_HEAD, create_model
from audioclip.models.losses import audio_head_loss
from audioclip.models.pretrained import load_into
from audioclip.tasks.base import AudioCLIPTask, require_family
from audioclip.tasks.entry import class_count_error
from audioclip.tasks.wandb_tables import EXAMPLES, log_classification_to_wandb, single_label_examples

log = logging.getLogger(__name__)


class AudioPretrainModule(AudioCLIPTask):
    """Standalone ESResNeXt-fbsp classifier: multi-label BCE over AudioSet's 527 classes (mAP) plus the TTF loss,
    or single-label CE (accuracy) for the audio head fine-tuned on ESC-50/US8K (`multilabel=False`).

    Args:
        num_classes: the classifier's outputs; None: AudioSet's 527 for multi-label training, else the data's class
            count (read from the dataset's metadata; the classifier is sized once the data is known).
        multilabel: AudioSet's multi-label BCE and mAP (True) or single-label CE and accuracy.
        imagenet_init: load torchvision's ImageNet `resnext50_32x4d` weights into the body (paper size only);
            offline it says so and keeps the random initialisation.
        new_classifier: start from an `init_from` classifier of another size (e.g. the 527-class `esrnxfbsp`): its
            `fc` is left freshly initialised, every other key loads strictly.
        class_weighted_loss: weight each clip's BCE by the sum of its classes' weights (inverse training-set class
            frequency, mean 1 over the classes present: `AudioSetDataModule.sample_weights`), as the reference
            trainer weighted its AudioSet loss. The sampling-side alternative is `AudioSetDataModule(balanced=True)`
            (docs/audioset.md). Use one or the other.
        init_from, optimizer, scheduler: as `AudioCLIPTask`.
    """

    scores_against = "labels"

    def __init__(
        self,
        model: str = "esresnext-fbsp",
        num_classes: int | None = None,
        multilabel: bool = True,
        imagenet_init: bool = True,
        new_classifier: bool = False,
        class_weighted_loss: bool = False,
        init_from: str | None = None,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        require_family("AudioPretrainModule", model, AUDIO_HEAD)
        if class_weighted_loss and not multilabel:
            raise ValueError("class_weighted_loss: weights AudioSet's multi-label BCE; set multilabel: true")
        if new_classifier and not init_from:
            raise ValueError("new_classifier: replaces the classifier of init_from weights, but init_from is not set")
        if num_classes is None and multilabel:
            num_classes = AUDIOSET_CLASSES
        # no class-name template: this head scores its own classifier's labels, not text
        super().__init__(model=model, init_from=init_from, optimizer=optimizer, scheduler=scheduler)
        if init_from is None and imagenet_init:
            self._imagenet_init()
        self.num_classes = num_classes
        if num_classes is not None:
            self._make_metrics(num_classes)
        self.metric_name = "map" if multilabel else "acc"
        self.monitor = (f"val/{self.metric_name}", "max")
        self._examples: list[dict] = []

    def build_model(self) -> nn.Module:
        # a single-label head sized by the data is built at AudioSet's size and resized in `setup`
        return create_model(self.hparams.model, num_classes=self.hparams.num_classes or AUDIOSET_CLASSES)

    def _make_metrics(self, num_classes: int) -> None:
        if self.hparams.multilabel:
            self.val_metric = AudioSetMAP(num_classes)  # leaves classes without a positive clip out of the mean
            self.test_metric = AudioSetMAP(num_classes)
        else:
            self.val_metric = MulticlassAccuracy(num_classes=num_classes, average="micro")
            self.test_metric = MulticlassAccuracy(num_classes=num_classes, average="micro")
            self.test_confusion = MulticlassConfusionMatrix(num_classes=num_classes)

    @property
    def produces(self) -> str | None:
        # trained on AudioSet's 527 classes it is the paper's audio head; a single-label fine-tune keeps its start's
        return "audio-head" if self.hparams.multilabel else None

    def _init_weights(self, init_from: str, fresh: tuple[str, ...] = ()) -> Mapping[str, Any]:
        if not self.hparams.new_classifier:
            return super()._init_weights(init_from)
        content = super()._init_weights(init_from, fresh=("fc.",))
        if self.hparams.num_classes is None:
            rank_zero_info(
                f"init_from {init_from}: every key but the classifier fc loaded strictly; fc is sized by the data"
            )
        else:
            size = self.hparams.num_classes
            rank_zero_info(
                f"init_from {init_from}: classifier fc replaced by a freshly initialised {size}-class layer; every "
                "other key loaded strictly"
            )
        return content

    def check_fits_data(self, datamodule) -> None:
        """Before anything is decoded (`audioclip fit`'s pre-flight): a fixed class count must be the data's."""
        names = getattr(datamodule, "declared_class_names", lambda: None)()
        if names is not None and self.num_classes is not None and len(names) != self.num_classes:
            raise class_count_error("AudioPretrainModule", self.num_classes, len(names))

    def setup(self, stage: str) -> None:
        names = getattr(getattr(self.attached_trainer, "datamodule", None), "class_names", None)
        if names and self.num_classes is None:
            self._resize_classifier(len(names))
        elif names and len(names) != self.num_classes:
            raise ValueError(
                f"num_classes: the classifier has {self.num_classes} outputs but the dataset has {len(names)} classes"
            )

    def _resize_classifier(self, num_classes: int) -> None:
        """A freshly initialised classifier for the data's classes (the body keeps its weights)."""
        if self.model.fc.out_features != num_classes:
            self.model.fc = nn.Linear(self.model.fc.in_features, num_classes)
            rank_zero_info(f"classifier fc replaced by a freshly initialised {num_classes}-class layer (the data's)")
        self.num_classes = self.hparams.num_classes = num_classes
        self._make_metrics(num_classes)

    def _imagenet_init(self) -> None:
        if self.model.config.base_planes != 64:
            log.info("imagenet_init: ImageNet weights exist only for the paper-size body; random init kept")
            return
        try:
            from torchvision.models import ResNeXt50_32X4D_Weights, resnext50_32x4d

            state = resnext50_32x4d(weights=ResNeXt50_32X4D_Weights.IMAGENET1K_V1).state_dict()
        except Exception as exc:  # offline, or no cached download: keep training possible
            log.warning("imagenet_init: ImageNet weights unavailable (%s); the body starts from random init", exc)
            return
        load_into(self.model, state, "torchvision resnext50_32x4d", ignore=("fc.", "att", "fbsp.", "window"))
        log.info("imagenet_init: body initialised from torchvision's ImageNet resnext50_32x4d")

    def _loss(self, logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        return audio_head_loss(logits, target, self.hparams.multilabel, weights) + self.model.ttf_loss()

    def _sample_weights(self, target: torch.Tensor) -> torch.Tensor | None:
        if not self.hparams.class_weighted_loss:
            return None
        if getattr(self, "_class_weights", None) is None:  # read once: label_counts.json of the training shards
            self._class_weights = self.trainer.datamodule.class_weights().to(target.device)
        return self.trainer.datamodule.sample_weights(target, self._class_weights)

    def training_loss(self, batch: dict) -> torch.Tensor:
        return self._loss(self.model(batch["audio"]), batch["target"], self._sample_weights(batch["target"]))

    def _eval_step(self, batch, stage: str, metric) -> torch.Tensor:
        logits = self.model(batch["audio"])
        target = batch["target"]
        self.log(f"{stage}/loss", self._loss(logits, target), sync_dist=True, batch_size=len(logits))
        if self.hparams.multilabel:
            metric.update(target, audio=torch.sigmoid(logits))
        else:
            metric.update(logits, target.long())
            self.log(f"{stage}/acc", metric, on_epoch=True, prog_bar=True)
        return logits

    def _log_map(self, stage: str, metric: AudioSetMAP) -> None:
        if self.hparams.multilabel:
            self.log(f"{stage}/map", metric.compute()["audio"], prog_bar=True)
            self.log(f"{stage}/map_classes_left_out", float(metric.classes_left_out))
            metric.reset()

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val", self.val_metric)

    def on_validation_epoch_end(self) -> None:
        self._log_map("val", self.val_metric)

    def test_step(self, batch, batch_idx):
        logits = self._eval_step(batch, "test", self.test_metric)
        if not self.hparams.multilabel:
            self.test_confusion.update(logits, batch["target"])
            self._examples += single_label_examples(batch, logits, EXAMPLES - len(self._examples))

    def on_test_epoch_start(self) -> None:
        self._examples = []

    def on_test_epoch_end(self) -> None:
        if self.hparams.multilabel:
            self._log_map("test", self.test_metric)
            return
        confusion = self.test_confusion.compute().cpu()  # synced across ranks
        self.test_confusion.reset()
        names = list(getattr(self.trainer.datamodule, "class_names", []))
        if self.trainer.is_global_zero and names:
            log_classification_to_wandb(self.loggers, names, confusion, self._examples)
