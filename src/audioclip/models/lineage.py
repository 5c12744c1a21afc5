"""Which model a result came from: weight lineage (the paper's variant and the steps that made it), and the fields
a result file records.

The paper (Guzhov et al. 2021, section 4.3; Tables 1-4) reports three model variants:

- `audio-head`: the standalone ESResNeXt-fbsp trained on AudioSet (`make pretrain-audio`, the official `esrnxfbsp`);
- `partial`: AudioCLIP after partial training (`make train-partial`, the official `partial`);
- `full`: AudioCLIP after full training (`make train-full`, the official `full`).

Anything else (random initialisation, CLIP's RN50 alone, a user's own state dict) is `other`. The variant is read
from where the weights came from: an official tag, or the lineage every checkpoint of this project carries under
`LINEAGE_KEY`, never from a file name. A phase that makes a variant sets it; fine-tuning keeps the variant it
started from and adds the dataset it was tuned on as a step (`audioclip.data.provenance.describe_data`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

VARIANTS = ("audio-head", "partial", "full", "other")
OFFICIAL_VARIANTS = {"esrnxfbsp": "audio-head", "partial": "partial", "full": "full"}
LINEAGE_KEY = "audioclip_lineage"


def weights_lineage(init_from: str | None, content: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`{variant, origin, steps}` of the weights named by `init_from` (a tag, a file, or None for random init);
    `content`: the file as `read_checkpoint` returned it, when the caller read it already."""
    from audioclip.models.pretrained import TAGS

    if not init_from:
        return {"variant": "other", "origin": "random initialisation", "steps": []}
    if init_from in TAGS:
        return {"variant": OFFICIAL_VARIANTS.get(init_from, "other"), "origin": f"official {init_from}", "steps": []}
    recorded = recorded_lineage(content) if content is not None else read_lineage(init_from)
    if recorded is not None:
        return recorded
    return {"variant": "other", "origin": str(init_from), "steps": []}


def recorded_lineage(content: Any) -> dict[str, Any] | None:
    """The lineage a checkpoint of this project recorded, from its content, or None (a state dict, a foreign file).
    An exported folder (`models.export_folder`) keeps it in its `config.json`."""
    from audioclip.models.export_folder import EXPORT_KEY

    if isinstance(content, Mapping) and isinstance(content.get(LINEAGE_KEY), Mapping):
        return dict(content[LINEAGE_KEY])
    exported = content.get(EXPORT_KEY) if isinstance(content, Mapping) else None
    if isinstance(exported, Mapping) and isinstance(exported.get("lineage"), Mapping):
        return dict(exported["lineage"])
    return None


def read_lineage(path: str | Path) -> dict[str, Any] | None:
    """The lineage a checkpoint file recorded, or None (a state dict, a foreign or unreadable file)."""
    from audioclip.models.pretrained import WeightsError, read_checkpoint

    try:
        return recorded_lineage(read_checkpoint(path))  # memory-mapped: the tensors are not read
    except (WeightsError, OSError):
        return None


def result_fields(lineage: Mapping[str, Any], model: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """What a result file records: the variant, the model, the data and whether the model was trained on it."""
    steps = list(lineage.get("steps", []))
    tuned = [s for s in steps if s.get("dataset") == data["dataset"]]
    return {
        "variant": lineage.get("variant", "other"),
        "model": model,
        "dataset": data["dataset"],
        "data": data["data"],
        # every step of the weights' making was on real data too, or the figure is not the paper's model
        "real_lineage": all(s.get("data") == "real" for s in steps),
        "trained_on_target": bool(tuned),
        "test_fold": data.get("test_fold"),
        "train_folds": data.get("train_folds", []),
        "protocol": tuned[-1].get("protocol", "honest") if tuned else "zero-shot",
        "lineage": dict(lineage),
    }
