"""Which model a result came from and which data it saw: weight lineage, real vs synthetic data, folds, protocol.

The paper (Guzhov et al. 2021, section 4.3; Tables 1-4) reports three model variants:

- `audio-head`: the standalone ESResNeXt-fbsp trained on AudioSet (`make pretrain-audio`, the official `esrnxfbsp`);
- `partial`: AudioCLIP after partial training (`make train-partial`, the official `partial`);
- `full`: AudioCLIP after full training (`make train-full`, the official `full`).

Anything else (random initialisation, CLIP's RN50 alone, a user's own state dict) is `other`. The variant is read
from where the weights came from: an official tag, or the lineage every checkpoint of this project carries under
`LINEAGE_KEY`, never from a file name. A phase that makes a variant sets it; fine-tuning keeps the variant it
started from and adds the dataset it was tuned on as a step.

Real vs synthetic: the synthetic generators (`audioclip.data.synthetic`, `audioclip.data.audioset.testmedia`) write
a `SYNTHETIC` marker file at the root of every tree they make; data under a marked folder counts as synthetic.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

VARIANTS = ("audio-head", "partial", "full", "other")
OFFICIAL_VARIANTS = {"esrnxfbsp": "audio-head", "partial": "partial", "full": "full"}
LINEAGE_KEY = "audioclip_lineage"
SYNTHETIC_MARKER = "SYNTHETIC"
MARKER_DEPTH = 3  # AudioSet shards sit two folders below the tree the generator marked (ROOT/shards/train)


def mark_synthetic(root: str | Path, generator: str) -> None:
    """Mark a generated dataset tree as synthetic, so results on it are never compared with the paper."""
    Path(root).mkdir(parents=True, exist_ok=True)
    (Path(root) / SYNTHETIC_MARKER).write_text(f"Synthetic data written by {generator}; not the real dataset.\n")


def data_kind(root: str | Path | None) -> str:
    """`synthetic` when `root` or one of the folders just above it holds the marker, else `real`."""
    if root is None:
        return "real"
    path = Path(root).resolve()
    for folder in (path, *path.parents[:MARKER_DEPTH]):
        if (folder / SYNTHETIC_MARKER).is_file():
            return "synthetic"
    return "real"


def weights_lineage(init_from: str | None) -> dict[str, Any]:
    """`{variant, origin, steps}` of the weights named by `init_from` (a tag, a file, or None for random init)."""
    from audioclip.models.pretrained import TAGS

    if not init_from:
        return {"variant": "other", "origin": "random initialisation", "steps": []}
    if init_from in TAGS:
        return {"variant": OFFICIAL_VARIANTS.get(init_from, "other"), "origin": f"official {init_from}", "steps": []}
    recorded = read_lineage(init_from)
    if recorded is not None:
        return recorded
    return {"variant": "other", "origin": str(init_from), "steps": []}


def read_lineage(path: str | Path) -> dict[str, Any] | None:
    """The lineage a checkpoint of this project recorded, or None (a state dict, a foreign file)."""
    import torch  # here: `audioclip prepare --help` imports this module and must not wait for torch

    try:
        # mmap: the tensors are not read, only the small lineage record is looked at
        content = torch.load(Path(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip-format torch file (TorchScript, legacy): it carries no lineage
        return None
    if isinstance(content, Mapping) and isinstance(content.get(LINEAGE_KEY), Mapping):
        return dict(content[LINEAGE_KEY])
    return None


def describe_data(datamodule: Any) -> dict[str, Any]:
    """Dataset name, real or synthetic, folds and protocol of a DataModule (for lineage steps and results)."""
    from audioclip.data.common import FoldedAudioDataModule

    if isinstance(datamodule, FoldedAudioDataModule):
        return {
            "dataset": datamodule.cache_spec.name,
            "data": data_kind(datamodule.root),
            "root": str(datamodule.root),
            "test_fold": datamodule.fold,
            # own data (`AudioFolderDataModule`) has no official fold count: its folds are the manifest's
            "train_folds": [k for k in range(1, getattr(datamodule, "num_folds", 0) + 1) if k != datamodule.fold],
            "protocol": datamodule.protocol,
        }
    dirs = [getattr(datamodule, name, None) for name in ("train_dir", "val_dir", "test_dir")]
    root = next((d for d in dirs if d), None)
    return {
        "dataset": "audioset" if type(datamodule).__name__.startswith("AudioSet") else type(datamodule).__name__,
        "data": "synthetic" if any(data_kind(d) == "synthetic" for d in dirs if d) else "real",
        "root": None if root is None else str(root),
        "test_fold": None,
        "train_folds": [],
        "protocol": "honest",  # AudioSet's splits are its own: train, a validation split, evaluation
    }


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
