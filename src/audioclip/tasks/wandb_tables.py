"""W&B tables of the training phases: a test confusion matrix, example predictions with playable audio, AudioSet
evaluation clips with their frame. Logged on rank 0, to every WandbLogger of the run; nothing here runs without one.
"""

from __future__ import annotations

import torch
from lightning.pytorch.loggers import WandbLogger

from audioclip.constants import INT16_SCALE, SAMPLE_RATE
from audioclip.models.preprocess import unnormalize_image

EXAMPLES = 16  # test predictions shown with their audio in W&B


def log_classification_to_wandb(loggers, classes: list[str], confusion: torch.Tensor, examples: list[dict]) -> None:
    """A confusion matrix and a table of example predictions (with playable audio) in every W&B run."""
    for logger in loggers:
        if not isinstance(logger, WandbLogger):
            continue
        import wandb

        cells = [
            [classes[i], classes[j], int(confusion[i, j])] for i in range(len(classes)) for j in range(len(classes))
        ]
        table = wandb.Table(columns=["Actual", "Predicted", "nPredictions"], data=cells)
        fields = {"Actual": "Actual", "Predicted": "Predicted", "nPredictions": "nPredictions"}
        plot = wandb.plot_table("wandb/confusion_matrix/v1", table, fields, {"title": "test confusion matrix"})
        rows = [
            [
                e["id"],
                wandb.Audio((e["audio"].mean(0) / INT16_SCALE).numpy(), sample_rate=SAMPLE_RATE),
                classes[e["target"]],
                classes[e["pred"]],
                e["prob"],
            ]
            for e in examples
        ]
        predictions = wandb.Table(columns=["id", "audio", "target", "prediction", "probability"], data=rows)
        logger.experiment.log({"test/confusion_matrix": plot, "test/predictions": predictions})


def single_label_examples(batch: dict, logits: torch.Tensor, room: int) -> list[dict]:
    """Up to `room` test predictions of a single-label batch, with their audio, for the W&B table."""
    probs = logits.softmax(-1)
    return [
        {
            "id": batch["id"][i],
            "audio": batch["audio"][i].float().cpu(),
            "target": int(batch["target"][i]),
            "pred": int(probs[i].argmax()),
            "prob": float(probs[i].max()),
        }
        for i in range(min(len(logits), max(room, 0)))
    ]




def log_audioset_examples(loggers, stage: str, classes: list[str], examples: list[dict]) -> None:
    """A table of evaluation clips in every W&B run: audio, the frame, the labels and the top-3 audio classes."""
    for logger in loggers:
        if not isinstance(logger, WandbLogger) or not examples:
            continue
        import wandb

        rows = []
        for e in examples:
            frame = None
            if e["image"] is not None:  # undo CLIP's normalisation to show the frame as the model saw it
                frame = wandb.Image(unnormalize_image(e["image"]).permute(1, 2, 0).numpy())
            audio = wandb.Audio((e["audio"].mean(0) / INT16_SCALE).numpy(), sample_rate=SAMPLE_RATE)
            rows.append([e["id"], audio, frame, e["text"], ", ".join(classes[k] for k in e["top"])])
        table = wandb.Table(columns=["id", "audio", "frame", "labels", "top-3 audio classes"], data=rows)
        logger.experiment.log({f"{stage}/examples": table})


def audioset_examples(batch: dict, audio_scores: torch.Tensor, with_image: bool, room: int) -> list[dict]:
    """Up to `room` evaluation clips of an AudioSet batch with their frame and top-3 audio classes, for the table."""
    return [
        {
            "id": batch["id"][i],
            "text": batch["text"][i],
            "audio": batch["audio"][i].float().cpu(),
            "image": batch["image"][i].float().cpu() if with_image else None,
            "top": audio_scores[i].topk(3).indices.tolist(),
        }
        for i in range(min(len(audio_scores), max(room, 0)))
    ]
