"""Fine-tuning AudioCLIP on ESC-50 / UrbanSound8K (Guzhov et al., 2021, section 4.3; Tables 1 and 3, "AudioCLIP"
rows): the audio head learns, CLIP's text and image heads stay frozen; audio-text contrastive loss with each clip's
class name as its text; evaluation is zero-shot-style classification against the dataset's class names.

The standalone ESResNeXt-fbsp classifier is fine-tuned by `AudioPretrainModule(multilabel=False)` (`audio_head.py`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from audioclip.models import AUDIOCLIP
from audioclip.models.losses import class_logits
from audioclip.tasks.base import AudioCLIPTask, require_family
from audioclip.tasks.entry import class_count_error
from audioclip.tasks.frozen import FrozenCLIP
from audioclip.tasks.wandb_tables import EXAMPLES, log_classification_to_wandb, single_label_examples


class FinetuneModule(FrozenCLIP, AudioCLIPTask):
    """Fine-tunes AudioCLIP's audio head on a single-label dataset; the class count is the data's.

    Args:
        num_classes: fixes the class count; None (the default) takes it from the data's class names.
        The others as `AudioCLIPTask` (model, init_from, optimizer, scheduler, template).
    """

    monitor = ("val/acc", "max")

    def __init__(self, model: str = "audioclip", num_classes: int | None = None, **kwargs) -> None:
        require_family("FinetuneModule", model, AUDIOCLIP, " (the standalone audio head is fine-tuned by "
                       "AudioPretrainModule, e.g. conf/finetune-esc50-audio-head.yaml)")  # fmt: skip
        super().__init__(model=model, **kwargs)
        self.freeze_clip(self.clip_model, include_image=True)
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

    def check_fits_data(self, datamodule) -> None:
        """Before anything is decoded: a fixed class count must be the data's (`audioclip fit`'s pre-flight)."""
        names = getattr(datamodule, "declared_class_names", lambda: None)()
        if names is not None and self.num_classes is not None and len(names) != self.num_classes:
            raise class_count_error("FinetuneModule", self.num_classes, len(names))

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
        return class_logits(self.clip_model.embed(audio)["audio"], self._class_text, self.clip_model.logit_scale_at)

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
