"""Where data came from: real or synthetic, and the dataset, folds and protocol of a DataModule.

The synthetic generators (`audioclip.data.synthetic`, `audioclip.data.audioset.testmedia`) write a `SYNTHETIC`
marker file at the root of every tree they make; data under a marked folder counts as synthetic, so a result on it
is never set beside the paper's (`audioclip.models.lineage.result_fields`, `make report`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def describe_data(datamodule: Any) -> dict[str, Any]:
    """Dataset name, real or synthetic, folds and protocol of a DataModule (for lineage steps and results)."""
    from audioclip.data.folds import FoldedAudioDataModule

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
