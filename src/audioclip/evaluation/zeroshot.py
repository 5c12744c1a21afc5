"""Zero-shot classification: every sample against the text embeddings of the class names.

References: AudioCLIP (Guzhov et al. 2021, sec. 4.4, Table 2: ESC-50, UrbanSound8K and ImageNet zero-shot accuracy
and AudioSet mAP) and CLIP (Radford et al. 2021, sec. 3.1.4). The reference formats the class names into the
template "{}"; with several templates, each template's text embeddings are L2-normalised, averaged over the
templates and normalised again, as open_clip's ``build_zero_shot_classifier`` does (CLIP's prompt ensembling).
Single-label sets report accuracy over all samples, per fold, per class and a confusion matrix; AudioSet and multi-label
manifests report macro mAP with the reference's class scores (``audioclip.evaluation.metrics``).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix

from audioclip.evaluation.embedded import EmbeddedSet
from audioclip.evaluation.metrics import AudioSetMAP, class_scores
from audioclip.inference import InputError, check_template
from audioclip.models import AudioCLIP

TEXT_BATCH = 256  # class names per text forward pass (ImageNet has 1,000)


def check_templates(templates: Sequence[str]) -> list[str]:
    return [check_template(template) for template in list(templates) or ["{}"]]


@torch.no_grad()
def class_text_embeddings(model: AudioCLIP, class_names: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """(K, D) L2-normalised text embeddings of the class names, averaged over the templates."""
    per_template = []
    for template in check_templates(templates):
        chunks = [
            model.encode_text(model.tokenize(list(class_names[i : i + TEXT_BATCH]), template)).float()
            for i in range(0, len(class_names), TEXT_BATCH)
        ]
        emb = torch.cat(chunks)
        per_template.append(emb / emb.norm(dim=-1, keepdim=True))
    mean = torch.stack(per_template).mean(0)
    return (mean / mean.norm(dim=-1, keepdim=True)).cpu()


def evaluated_on(data: EmbeddedSet, num_folds: int | None) -> str:
    """Which part of the dataset was evaluated, in words; published zero-shot numbers differ on this."""
    folds = data.folds_used
    if num_folds is None:
        return f"whole set ({len(data)} samples)"
    if len(folds) == num_folds:
        return f"every fold (all {num_folds} official folds = the whole dataset, {len(data)} samples)"
    return f"fold{'s' if len(folds) > 1 else ''} {', '.join(map(str, folds))} of {num_folds} only ({len(data)} samples)"


def zeroshot(
    model: AudioCLIP, data: EmbeddedSet, templates: Sequence[str] = ("{}",), num_folds: int | None = None
) -> dict:
    """Zero-shot results of an embedded set (JSON-ready). ``num_folds``: the dataset's official fold count."""
    if data.task == "caption":
        raise InputError(f"{data.root}: a caption manifest has no classes to classify; use `audioclip evaluate query`")
    templates = check_templates(templates)
    text = class_text_embeddings(model, data.class_names, templates)
    result: dict = {
        "task": "zeroshot",
        "dataset": data.dataset,
        "root": data.root,
        "templates": templates,
        "evaluated_on": evaluated_on(data, num_folds),
        "folds": data.folds_used if num_folds else [],
        "num_samples": len(data),
        "class_names": data.class_names,
    }
    if data.dataset == "audioset" or data.task == "multilabel":
        metric = AudioSetMAP(num_classes=len(data.class_names))
        target = torch.zeros(len(data), len(data.class_names), dtype=torch.int)
        for row, labels in enumerate(data.labels):
            target[row, list(labels)] = 1
        metric.update(target, **{m: class_scores(e, text) for m, e in data.embeddings.items()})
        result["map"] = {name: float(value) for name, value in metric.compute().items()}
        result["map_classes_left_out"] = metric.classes_left_out  # classes without a positive clip
        return result

    (modality,) = data.embeddings  # single-label sets have one sample modality
    preds = (data.embeddings[modality] @ text.T).argmax(-1)
    target = torch.tensor([labels[0] for labels in data.labels])
    confusion = multiclass_confusion_matrix(preds, target, num_classes=len(data.class_names))
    folds = torch.tensor(data.folds)
    fold_accuracy = {
        int(k): float((preds[folds == k] == target[folds == k]).float().mean()) for k in data.folds_used if k
    }
    per_class = confusion.diag() / confusion.sum(1).clamp(min=1)
    result.update(
        modality=modality,
        accuracy=float((preds == target).float().mean()),
        fold_accuracy=fold_accuracy,
        fold_mean=statistics.fmean(fold_accuracy.values()) if fold_accuracy else None,
        fold_std=statistics.stdev(fold_accuracy.values()) if len(fold_accuracy) > 1 else None,
        per_class_accuracy=[float(x) for x in per_class],
        class_counts=confusion.sum(1).tolist(),
        confusion=confusion.tolist(),
    )
    return result
