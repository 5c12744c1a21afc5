"""AudioSet evaluation: macro mean average precision over the 527 classes, for audio, image and both (retrieval's
R@k and mAP@10 are in `audioclip.evaluation.retrieval`).

Reference: AudioCLIP (Guzhov et al. 2021, sec. 4.4, Table 2) and its trainer's ``eval_step``: a clip's score for a
class is ``sigmoid(logits / scale - 0.5)`` where ``logits = scale * e @ t.T`` for the unit-norm clip embedding ``e``
and the unit-norm text embedding ``t`` of the class name, so the score is ``sigmoid(cos(e, t) - 0.5)`` whatever the
logit scale. "Both" averages the audio and image class scores. The metric keeps the scores of every sample and
torchmetrics gathers them across DDP ranks before ``compute``, so the mAP is the one of the whole evaluation set.

A class without a positive clip in the evaluation set has no average precision (no recall level is ever reached),
so it is left out of the macro mean, and the number left out is reported beside the mAP. Counting it as AP 0, as
torchmetrics' ``multilabel_average_precision(average="macro")`` does, would lower the mAP of every evaluation
subset that misses a few of the 527 classes: per-class AP [0.833, 1.0, no positive] is 0.917, not 0.611.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.functional.classification import multilabel_average_precision
from torchmetrics.utilities import dim_zero_cat

from audioclip.constants import AUDIOSET_CLASSES


def macro_average_precision(scores: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(macro AP over the classes with at least one positive, number of classes without one) of (N, K) scores and a
    multi-hot (N, K) target; the AP is NaN when no class has a positive."""
    has_positive = target.sum(0) > 0
    left_out = int((~has_positive).sum())
    if not has_positive.any():
        return torch.tensor(float("nan")), left_out
    kept = int(has_positive.sum())
    per_class = multilabel_average_precision(
        scores[:, has_positive], target[:, has_positive], num_labels=kept, average="none"
    )
    return per_class.mean(), left_out


def class_scores(embeddings: torch.Tensor, class_text_embeddings: torch.Tensor) -> torch.Tensor:
    """Multi-label class scores (B, K) of embeddings (B, D) against class-name text embeddings (K, D)."""
    cosine = F.normalize(embeddings.float(), dim=-1) @ F.normalize(class_text_embeddings.float(), dim=-1).T
    return torch.sigmoid(cosine - 0.5)


class AudioSetMAP(Metric):
    """Macro mAP over ``num_classes`` labels for the audio, image and combined (mean) class scores.

    ``update(target, audio=..., image=...)`` takes a multi-hot target (B, K) and class scores (B, K) for either or
    both modalities (see ``class_scores``); ``compute()`` returns ``{"audio", "image", "both"}`` for the modalities
    that were given. Classes without a positive sample have no AP and are left out of the mean; after ``compute``,
    ``classes_left_out`` holds how many (of the samples of every rank) they were.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, num_classes: int = AUDIOSET_CLASSES, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.classes_left_out: int | None = None
        for name in ("target", "audio", "image"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(
        self, target: torch.Tensor, audio: torch.Tensor | None = None, image: torch.Tensor | None = None
    ) -> None:
        if audio is None and image is None:
            raise ValueError("AudioSetMAP.update needs audio and/or image class scores")
        for name, scores in (("audio", audio), ("image", image)):
            if scores is not None and scores.shape != target.shape:
                raise ValueError(f"AudioSetMAP: {name} scores {tuple(scores.shape)} vs target {tuple(target.shape)}")
            if scores is None and self._given(name):
                raise ValueError(f"AudioSetMAP: {name} scores were given before; give them for every batch")
        if target.shape[-1] != self.num_classes:
            raise ValueError(f"AudioSetMAP: target has {target.shape[-1]} classes, expected {self.num_classes}")
        self.target.append(target.int())
        if audio is not None:
            self.audio.append(audio.float())
        if image is not None:
            self.image.append(image.float())

    def _given(self, name: str) -> bool:
        state = getattr(self, name)  # a list of batches; one tensor once torchmetrics has gathered the ranks
        return state.numel() > 0 if isinstance(state, torch.Tensor) else len(state) > 0

    def compute(self) -> dict[str, torch.Tensor]:
        target = dim_zero_cat(self.target)
        scores = {name: dim_zero_cat(getattr(self, name)) for name in ("audio", "image") if self._given(name)}
        if len(scores) == 2:
            scores["both"] = (scores["audio"] + scores["image"]) / 2
        result = {}
        for name, s in scores.items():
            result[name], self.classes_left_out = macro_average_precision(s, target)
        return result
