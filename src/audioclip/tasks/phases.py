"""The four training phases of AudioCLIP (Guzhov et al., 2021, section 4.3), one LightningModule each.

| phase                 | module                  | trains                               | loss / metric               |
|-----------------------|-------------------------|--------------------------------------|-----------------------------|
| pretrain-audio        | `AudioPretrainModule`   | ESResNeXt-fbsp (ImageNet init)       | BCE over 527 / mAP          |
| train-partial         | `PartialTrainingModule` | audio head; CLIP frozen              | contrastive / mAP           |
| train-full            | `FullTrainingModule`    | all three heads                      | contrastive / mAP           |
| finetune-*            | `FinetuneModule`        | audio head; text/image frozen        | contrastive / accuracy      |
| finetune-*-audio-head | `AudioPretrainModule`   | ESResNeXt-fbsp with a new classifier | CE / accuracy               |
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from audioclip.constants import AUDIOSET_CLASSES
from audioclip.evaluation.metrics import AudioSetMAP, class_scores
from audioclip.models import AudioCLIP, AudioCLIPConfig, get_config
from audioclip.models.lineage import weights_lineage
from audioclip.models.losses import clamp_scale
from audioclip.models.pretrained import load_into
from audioclip.tasks.base import AudioCLIPTask, freeze
from audioclip.tasks.wandb_tables import (
    EXAMPLES,
    audioset_examples,
    log_audioset_examples,
    log_classification_to_wandb,
    single_label_examples,
)

log = logging.getLogger(__name__)

class _FrozenCLIPMixin:
    """Keeps CLIP's frozen heads in eval mode whatever Lightning does with `train()`."""

    frozen: tuple[str, ...] = ()

    def _freeze_clip(self, model: AudioCLIP, include_image: bool = True) -> None:
        parts = [model.transformer, model.token_embedding, model.ln_final] + ([model.visual] if include_image else [])
        for part in parts:
            freeze(part)
        for name in ("positional_embedding", "text_projection", "logit_scale"):
            getattr(model, name).requires_grad_(False)
        self.frozen = tuple(parts)

    def train(self, mode: bool = True):
        super().train(mode)
        for part in self.frozen:
            part.eval()
        return self


class AudioPretrainModule(AudioCLIPTask):
    """Standalone ESResNeXt-fbsp classifier: multi-label BCE over AudioSet's 527 classes (mAP) plus the TTF loss,
    or single-label CE (accuracy) for the audio head fine-tuned on ESC-50/US8K (`multilabel=False`,
    `num_classes`; paper section 4.3, Tables 1 and 3 "Audio-Head").

    `imagenet_init` loads torchvision's ImageNet `resnext50_32x4d` weights into the body (paper size only);
    offline it says so and keeps the random initialisation. `new_classifier` starts from an `init_from` classifier
    of another size (e.g. the 527-class `esrnxfbsp`): its `fc` is left freshly initialised for `num_classes`,
    every other key loads strictly.

    `class_weighted_loss` weights each clip's BCE by the sum of its classes' weights (inverse training-set class
    frequency, mean 1 over the classes present: `AudioSetDataModule.sample_weights`), as the reference trainer
    weighted its AudioSet loss. It changes the loss's balance, not which clips are drawn; the sampling-side
    alternative is `AudioSetDataModule(balanced=True)` (docs/audioset.md). Use one or the other.
    """

    def __init__(
        self,
        model: str = "esresnext-fbsp",
        num_classes: int = AUDIOSET_CLASSES,
        multilabel: bool = True,
        imagenet_init: bool = True,
        init_from: str | None = None,
        new_classifier: bool = False,
        lr: float = 1e-4,
        gamma: float = 0.95,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        class_weighted_loss: bool = False,
    ) -> None:  # pragma: no mutate block
        if isinstance(get_config(model), AudioCLIPConfig):
            raise ValueError(f"model: AudioPretrainModule trains a standalone audio head, not {model!r}")
        if class_weighted_loss and not multilabel:
            raise ValueError("class_weighted_loss: weights AudioSet's multi-label BCE; set multilabel: true")
        if new_classifier and not init_from:
            raise ValueError("new_classifier: replaces the classifier of init_from weights, but init_from is not set")
        super().__init__(
            model, init_from, lr, gamma, momentum, weight_decay, model_overrides={"num_classes": num_classes}
        )
        if imagenet_init and not init_from:
            self._imagenet_init()
        if multilabel:
            self.val_metric = AudioSetMAP(num_classes)  # leaves classes without a positive clip out of the mean
            self.test_metric = AudioSetMAP(num_classes)
        else:
            self.val_metric = MulticlassAccuracy(num_classes=num_classes, average="micro")
            self.test_metric = MulticlassAccuracy(num_classes=num_classes, average="micro")
            self.test_confusion = MulticlassConfusionMatrix(num_classes=num_classes)
        self.metric_name = "map" if multilabel else "acc"
        self.monitor = (f"val/{self.metric_name}", "max")
        self._examples: list[dict] = []

    scores_against = "labels"

    @property
    def produces(self) -> str | None:
        # trained on AudioSet's 527 classes it is the paper's audio head; a single-label fine-tune keeps its start's
        return "audio-head" if self.hparams.multilabel else None

    def _init_weights(self, init_from: str) -> Mapping[str, Any]:
        if not self.hparams.new_classifier:
            return super()._init_weights(init_from)
        content = super()._init_weights(init_from, fresh=("fc.",))
        rank_zero_info(
            f"init_from {init_from}: classifier fc replaced by a freshly initialised {self.hparams.num_classes}-class "
            "layer; every other key loaded strictly"
        )
        return content

    def setup(self, stage: str) -> None:
        names = getattr(self.trainer.datamodule, "class_names", None) if self._trainer is not None else None
        if names and len(names) != self.hparams.num_classes:
            raise ValueError(
                f"num_classes: the classifier has {self.hparams.num_classes} outputs but the dataset has "
                f"{len(names)} classes"
            )

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
        if self.hparams.multilabel and weights is not None:
            per_clip = F.binary_cross_entropy_with_logits(logits, target.float(), reduction="none").sum(-1)
            loss = (per_clip * weights).sum() / logits.shape[0]
        elif self.hparams.multilabel:
            # the reference: BCE summed over classes, averaged over the batch
            loss = F.binary_cross_entropy_with_logits(logits, target.float(), reduction="sum") / logits.shape[0]
        else:
            loss = F.cross_entropy(logits, target)
        return loss + self.model.ttf_loss()

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


class _ContrastiveAudioSetModule(_FrozenCLIPMixin, AudioCLIPTask):
    """AudioSet phases: contrastive loss over audio, one video frame and the class-name text; evaluation is
    macro mAP over the 527 classes for audio, image and both, with class scores from the text embeddings of the
    class names (`audioclip.evaluation.metrics`).

    `audio_init_from` loads an audio head on top of `init_from` (e.g. CLIP's `clip-rn50` for image and text, and
    the pretrain-audio phase's checkpoint or the official `esrnxfbsp` for audio).
    """

    monitor = ("val/map_audio", "max")

    def __init__(
        self,
        model: str = "audioclip",
        init_from: str | None = None,
        audio_init_from: str | None = None,
        lr: float = 1e-4,
        gamma: float = 0.95,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        template: str = "{}",
    ) -> None:  # pragma: no mutate block
        if not isinstance(get_config(model), AudioCLIPConfig):
            raise ValueError(f"model: {type(self).__name__} needs an AudioCLIP model, got {model!r}")
        super().__init__(model, init_from, lr, gamma, momentum, weight_decay, template)
        if audio_init_from:
            audio = weights_lineage(audio_init_from, self._init_weights(audio_init_from))
            self.init_lineage = {
                "variant": self.init_lineage["variant"],
                "origin": f"{self.init_lineage['origin']}, audio head from {audio['origin']}",
                "steps": audio["steps"] + self.init_lineage["steps"],
            }
        self.val_map = AudioSetMAP(AUDIOSET_CLASSES)
        self.test_map = AudioSetMAP(AUDIOSET_CLASSES)
        self._class_text: torch.Tensor | None = None
        self._examples: list[dict] = []

    def training_loss(self, batch: dict) -> torch.Tensor:
        emb = self.clip_model.embed(batch["audio"], batch.get("image"), self.tokens(batch["text"]))
        return self.clip_model.loss(emb)

    def _refresh_class_text(self) -> None:
        names = list(getattr(self.trainer.datamodule, "class_names", []))
        if len(names) != AUDIOSET_CLASSES:
            raise ValueError(f"the datamodule has {len(names)} class names, AudioSet evaluation needs 527")
        with torch.no_grad():
            self._class_text = self.clip_model.encode_text(self.tokens(names))

    on_validation_epoch_start = on_test_epoch_start = _refresh_class_text

    def _eval_step(self, batch, metric: AudioSetMAP) -> None:
        emb = self.clip_model.embed(batch["audio"], batch.get("image"))
        audio = class_scores(emb["audio"], self._class_text)
        image = None if emb["image"] is None else class_scores(emb["image"], self._class_text)
        metric.update(batch["target"], audio=audio, image=image)
        self._examples += audioset_examples(batch, audio, image is not None, EXAMPLES - len(self._examples))

    def _log_map(self, stage: str, metric: AudioSetMAP) -> None:
        for name, value in metric.compute().items():
            self.log(f"{stage}/map_{name}", value, prog_bar=name == "audio")
        self.log(f"{stage}/map_classes_left_out", float(metric.classes_left_out))
        metric.reset()
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            log_audioset_examples(self.loggers, stage, list(self.trainer.datamodule.class_names), self._examples)
        self._examples = []

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, self.val_map)

    def on_validation_epoch_end(self) -> None:
        self._log_map("val", self.val_map)

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, self.test_map)

    def on_test_epoch_end(self) -> None:
        self._log_map("test", self.test_map)


class PartialTrainingModule(_ContrastiveAudioSetModule):
    """Cooperative phase: CLIP's text and image heads are frozen teachers, only the audio head learns."""

    produces = "partial"

    def __init__(
        self, model: str = "audioclip", init_from: str | None = "clip-rn50", **kwargs
    ) -> None:  # pragma: no mutate block
        super().__init__(model, init_from, **kwargs)
        self._freeze_clip(self.clip_model, include_image=True)


class FullTrainingModule(_ContrastiveAudioSetModule):
    """All three heads trained jointly on audio + frame + text."""

    produces = "full"


class FinetuneModule(_FrozenCLIPMixin, AudioCLIPTask):
    """Fine-tuning on ESC-50 / US8K: audio head only (text and image frozen), audio-text contrastive loss with
    class names as text; evaluation is zero-shot-style classification against the dataset's class names.

    The standalone ESResNeXt-fbsp classifier is fine-tuned by `AudioPretrainModule(multilabel=False)`.
    """

    monitor = ("val/acc", "max")

    def __init__(
        self,
        model: str = "audioclip",
        init_from: str | None = None,
        lr: float = 5e-5,
        gamma: float = 0.96,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        template: str = "{}",
        num_classes: int | None = None,
    ) -> None:  # pragma: no mutate block
        if not isinstance(get_config(model), AudioCLIPConfig):
            raise ValueError(
                f"model: FinetuneModule needs an AudioCLIP model, got {model!r} (the standalone audio head is "
                "fine-tuned by AudioPretrainModule, e.g. conf/finetune-esc50-audio-head.yaml)"
            )
        super().__init__(model, init_from, lr, gamma, momentum, weight_decay, template)
        self._freeze_clip(self.clip_model, include_image=True)
        # only the audio-text pair is trained here: a trainable scale without gradient would stop DDP (it refuses
        # unused parameters) and takes no step in one process either (SGD skips a missing gradient)
        self.clip_model.logit_scale_ai.requires_grad_(False)
        self.num_classes = num_classes
        if num_classes is not None:
            self._make_metrics(num_classes)
        self._class_text: torch.Tensor | None = None
        self._examples: list[dict] = []

    def _make_metrics(self, num_classes: int) -> None:
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_confusion = MulticlassConfusionMatrix(num_classes=num_classes)

    def setup(self, stage: str) -> None:
        """Without `num_classes` the dataset's class names decide it (zero-shot-style heads need no fixed size)."""
        if self.num_classes is None:
            self.num_classes = len(self._classes())
            self._make_metrics(self.num_classes)

    def _classes(self) -> list[str]:
        # the datamodule reads them in its setup, which Lightning runs before the LightningModule's
        names = list(getattr(self.trainer.datamodule, "class_names", []))
        if not names:
            raise ValueError("the datamodule exposes no class names for zero-shot-style evaluation")
        if self.num_classes is not None and len(names) != self.num_classes:
            raise ValueError(
                f"num_classes: the model is set up for {self.num_classes} classes but the dataset has {len(names)}"
            )
        return names

    def _refresh_class_text(self) -> None:
        with torch.no_grad():
            text = self.clip_model.encode_text(self.tokens(self._classes()))
        self._class_text = text / text.norm(dim=-1, keepdim=True)

    def on_fit_start(self) -> None:
        self._refresh_class_text()

    on_validation_epoch_start = _refresh_class_text

    def _logits(self, audio: torch.Tensor) -> torch.Tensor:
        emb = self.clip_model.embed(audio)["audio"]
        return clamp_scale(self.clip_model.logit_scale_at) * emb @ self._class_text.T

    def training_loss(self, batch: dict) -> torch.Tensor:
        # text is frozen: each sample's text embedding is its class's (the reference pairs them row by row)
        audio = self.clip_model.embed(batch["audio"])["audio"]
        return self.clip_model.loss({"audio": audio, "text": self._class_text[batch["target"]]})

    def validation_step(self, batch, batch_idx):
        logits = self._logits(batch["audio"])
        self.log("val/loss", F.cross_entropy(logits, batch["target"]), sync_dist=True, batch_size=len(logits))
        self.val_acc.update(logits, batch["target"])
        self.log("val/acc", self.val_acc, on_epoch=True, prog_bar=True)

    def test_step(self, batch, batch_idx):
        logits = self._logits(batch["audio"])
        self.test_acc.update(logits, batch["target"])
        self.log("test/acc", self.test_acc, on_epoch=True, prog_bar=True)
        self.test_confusion.update(logits, batch["target"])
        self._examples += single_label_examples(batch, logits, EXAMPLES - len(self._examples))

    def on_test_epoch_start(self) -> None:
        self._refresh_class_text()
        self._examples = []

    def on_test_epoch_end(self) -> None:
        confusion = self.test_confusion.compute().cpu()  # synced across ranks
        self.test_confusion.reset()
        if self.trainer.is_global_zero:
            log_classification_to_wandb(self.loggers, self._classes(), confusion, self._examples)
