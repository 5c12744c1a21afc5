"""Fine-tuning on your own sounds (`audioclip.data.AudioFolderDataModule`): classes, multi-label or captions.

Beyond the paper, which fine-tunes on ESC-50 and UrbanSound8K only (Guzhov et al., 2021, section 4.3), with its
machinery: the audio head learns, CLIP's text and image heads stay frozen, and the task follows the data.

| data                      | training loss                                    | evaluation (val / test)       |
|---------------------------|--------------------------------------------------|-------------------------------|
| class names (tree, label) | audio-text contrastive vs class names (as ESC-50) | accuracy vs the class names  |
| labels (multi-label)      | BCE of sigmoid(s * cos(audio, class name) + b)    | macro mAP                     |
| caption                   | audio-text contrastive with each clip's caption   | t->a, a->t R@1/5/10, mAP@10   |

The multi-label head scores a class by the cosine of the clip's and the class name's embeddings, with a learnable
scale s (init 10) and bias b (init -10) as SigLIP's sigmoid loss (Zhai et al., 2023) does: with few positives per
clip the bias starts every class near "absent". Caption retrieval scores follow
`audioclip.evaluation.retrieval`.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MultilabelAveragePrecision

from audioclip.evaluation.retrieval import caption_retrieval
from audioclip.process_group import rank_and_world
from audioclip.tasks.finetune import FinetuneModule

TASKS = ("class", "multilabel", "caption")
CAPTION_BATCH = 256  # captions per text forward pass at evaluation (Clotho's validation split has 5,225)
# the validation metric that selects checkpoints, per task
MONITORS = {"class": ("val/acc", "max"), "multilabel": ("val/map", "max"), "caption": ("val/t2a_map@10", "max")}


class FolderFinetuneModule(FinetuneModule):
    """`FinetuneModule` for a class-folder tree or a manifest: the task (`class`, `multilabel`, `caption`) is the
    datamodule's unless `task` names it.

    Args:
        task: `class`, `multilabel` or `caption`; None takes the datamodule's `task`.
        The others as `FinetuneModule`.
    """

    def __init__(self, task: str | None = None, **kwargs) -> None:
        if task is not None and task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)} (or null: the data's), got {task!r}")
        super().__init__(**kwargs)
        self.task = task
        # multi-label head (SigLIP-style); part of every checkpoint, trained only for multi-label data
        self.label_log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.label_bias = nn.Parameter(torch.tensor(-10.0))
        self._eval_audio: list[torch.Tensor] = []
        self._eval_ids: list[torch.Tensor] = []

    # The checkpoint's state dict stays the model's alone ("model.*"), so that `audioclip.load`, `evaluate` and
    # `index` read a fine-tuned checkpoint like any other; the multi-label head travels beside it.
    _HEAD = ("label_log_scale", "label_bias")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["multilabel_head"] = {name: checkpoint["state_dict"].pop(name) for name in self._HEAD}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"].update(checkpoint.get("multilabel_head") or {n: getattr(self, n) for n in self._HEAD})

    def _data_task(self) -> str:
        task = self.task or getattr(self.trainer.datamodule, "task", None)
        if task not in TASKS:
            raise ValueError(f"task: the datamodule states no task ({task!r}); set --model.init_args.task")
        return task

    def configure_callbacks(self):
        # Lightning asks for callbacks before `setup`; the datamodule knows its task from the layout alone
        self.task = self._data_task()
        self.monitor = MONITORS[self.task]
        callbacks = super().configure_callbacks()
        metric = self.monitor[0]
        for callback in callbacks:
            if getattr(callback, "monitor", None) == metric and metric[-1].isdigit():
                # "val_t2a_map@10=0.6875", not "val_t2a_map@100.6875"
                callback.filename = callback.filename.replace(f"{{{metric}:", f"={{{metric}:")
        return callbacks

    def setup(self, stage: str) -> None:
        self.task = self._data_task()
        # only what the task's loss uses is trainable: DDP refuses a trainable parameter without gradient
        multilabel = self.task == "multilabel"
        self.label_log_scale.requires_grad_(multilabel)
        self.label_bias.requires_grad_(multilabel)
        self.clip_model.logit_scale_at.requires_grad_(not multilabel)  # the multi-label head has its own scale
        if self.task == "class":
            super().setup(stage)
        elif self.task == "multilabel" and self.num_classes is None:
            self.num_classes = len(self._classes())
            self.val_map = MultilabelAveragePrecision(num_labels=self.num_classes, average="macro")
            self.test_map = MultilabelAveragePrecision(num_labels=self.num_classes, average="macro")

    def param_groups(self) -> list[dict]:
        groups = super().param_groups()
        if self.task == "multilabel":  # like the logit scales: no weight decay
            groups.append({"params": [self.label_log_scale, self.label_bias], "weight_decay": 0.0})
        return groups

    def _refresh_class_text(self) -> None:
        if self.task != "caption":
            super()._refresh_class_text()

    def on_validation_epoch_start(self) -> None:
        self._refresh_class_text()

    def _label_logits(self, audio_embedding: torch.Tensor) -> torch.Tensor:
        return self.label_log_scale.exp() * audio_embedding @ self._class_text.T + self.label_bias

    def _multilabel_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # as the reference's AudioSet BCE: summed over classes, averaged over the batch
        return F.binary_cross_entropy_with_logits(logits, target.float(), reduction="sum") / len(logits)

    @torch.no_grad()
    def _caption_embeddings(self, captions: list[str]) -> torch.Tensor:
        text = self.clip_model.encode_text(self.tokens(captions))
        return text / text.norm(dim=-1, keepdim=True)

    def training_loss(self, batch: dict) -> torch.Tensor:
        if self.task == "class":
            return super().training_loss(batch)
        audio = self.clip_model.embed(batch["audio"])["audio"]
        if self.task == "multilabel":
            return self._multilabel_loss(self._label_logits(audio), batch["target"]) + self.clip_model.audio.ttf_loss()
        return self.clip_model.loss({"audio": audio, "text": self._caption_embeddings(batch["text"])})

    def _eval_step(self, batch, stage: str) -> None:
        audio = self.clip_model.embed(batch["audio"])["audio"]
        if self.task == "multilabel":
            logits = self._label_logits(audio)
            loss = self._multilabel_loss(logits, batch["target"])
            self.log(f"{stage}/loss", loss, sync_dist=True, batch_size=len(logits))
            metric = self.val_map if stage == "val" else self.test_map
            metric.update(torch.sigmoid(logits), batch["target"].long())
            self.log(f"{stage}/map", metric, on_epoch=True, prog_bar=True)
        else:
            self._eval_audio.append(audio.float())
            self._eval_ids.append(batch["target"])

    def _caption_metrics(self, stage: str) -> None:
        """Retrieval over the whole evaluation split: every rank's clips are gathered first."""
        audio = torch.cat(self._eval_audio) if self._eval_audio else torch.empty(0, self.clip_model.config.embed_dim)
        ids = torch.cat(self._eval_ids) if self._eval_ids else torch.empty(0, dtype=torch.long)
        self._eval_audio, self._eval_ids = [], []
        _, world = rank_and_world()
        if world > 1:
            shares: list = [None] * world
            dist.all_gather_object(shares, (audio.cpu(), ids.cpu()))
            audio, ids = torch.cat([s[0] for s in shares]), torch.cat([s[1] for s in shares])
        if not len(ids):
            return
        # every caption of this split's clips is a text query, relevant to the clips that carry it: one caption per
        # clip in a manifest, five per clip in Clotho and AudioCaps (the datamodule's caption_texts)
        owners, texts = [], []
        for target in sorted(set(ids.tolist())):
            captions = self.trainer.datamodule.caption_texts(target)
            owners += [target] * len(captions)
            texts += captions
        text = torch.cat(
            [self._caption_embeddings(texts[i : i + CAPTION_BATCH]) for i in range(0, len(texts), CAPTION_BATCH)]
        )
        relevant = torch.tensor(owners)[:, None] == ids.cpu()[None]
        for name, value in caption_retrieval(audio.cpu(), text.float().cpu(), relevant).items():
            self.log(f"{stage}/{name}", value, prog_bar=name == "t2a_r@1")

    def validation_step(self, batch, batch_idx):
        if self.task == "class":
            return super().validation_step(batch, batch_idx)
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        if self.task == "caption":
            self._caption_metrics("val")

    def test_step(self, batch, batch_idx):
        if self.task == "class":
            return super().test_step(batch, batch_idx)
        self._eval_step(batch, "test")

    def on_test_epoch_start(self) -> None:
        if self.task == "class":
            super().on_test_epoch_start()
        elif self.task == "multilabel":
            self._refresh_class_text()

    def on_test_epoch_end(self) -> None:
        if self.task == "class":
            super().on_test_epoch_end()
        elif self.task == "caption":
            self._caption_metrics("test")
