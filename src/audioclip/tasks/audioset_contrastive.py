"""The AudioSet phases of AudioCLIP (Guzhov et al., 2021, section 4.3): contrastive training over audio, one video
frame and the class-name text. Partial (cooperative) training keeps CLIP's image and text heads frozen as teachers;
full training trains all three heads. Evaluation is macro mAP over the 527 classes for audio, image and both, with
class scores from the text embeddings of the class names (`audioclip.evaluation.metrics`).
"""

from __future__ import annotations

import torch

from audioclip.constants import AUDIOSET_CLASSES
from audioclip.evaluation.metrics import AudioSetMAP, class_scores
from audioclip.models import AUDIOCLIP
from audioclip.models.lineage import weights_lineage
from audioclip.tasks.base import AudioCLIPTask, require_family
from audioclip.tasks.frozen import FrozenCLIP
from audioclip.tasks.wandb_tables import EXAMPLES, audioset_examples, log_audioset_examples


class AudioSetContrastiveModule(FrozenCLIP, AudioCLIPTask):
    """Contrastive AudioSet training of an AudioCLIP: full training by default; `PartialTrainingModule` freezes CLIP.

    Args:
        audio_init_from: an audio head loaded on top of `init_from` (e.g. CLIP's `clip-rn50` for image and text, and
            the pretrain-audio phase's checkpoint or the official `esrnxfbsp` for audio).
        The others as `AudioCLIPTask` (model, init_from, optimizer, scheduler, template).
    """

    monitor = ("val/map_audio", "max")
    produces = "full"

    def __init__(self, model: str = "audioclip", audio_init_from: str | None = None, **kwargs) -> None:
        require_family(type(self).__name__, model, AUDIOCLIP)
        super().__init__(model=model, **kwargs)
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


class FullTrainingModule(AudioSetContrastiveModule):
    """All three heads trained jointly on audio + frame + text (`make train-full`)."""


class PartialTrainingModule(AudioSetContrastiveModule):
    """Cooperative phase: CLIP's text and image heads are frozen teachers, only the audio head learns
    (`make train-partial`; `init_from` defaults to CLIP's RN50)."""

    produces = "partial"

    def __init__(self, model: str = "audioclip", init_from: str | None = "clip-rn50", **kwargs) -> None:
        super().__init__(model=model, init_from=init_from, **kwargs)
        self.freeze_clip(self.clip_model, include_image=True)
