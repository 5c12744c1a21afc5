"""Datasets of AudioCLIP as LightningDataModules yielding the dict batches of DESIGN.md ("The batch contract")."""

from audioclip.data.common import (
    BadFileError,
    DatasetNotFoundError,
    MetadataError,
    MissingFileError,
    collate,
    per_device_batch_size,
)
from audioclip.data.esc50 import ESC50DataModule
from audioclip.data.folder import AudioFolderDataModule
from audioclip.data.us8k import US8KDataModule

__all__ = [
    "AudioFolderDataModule",
    "BadFileError",
    "DatasetNotFoundError",
    "ESC50DataModule",
    "MetadataError",
    "MissingFileError",
    "US8KDataModule",
    "collate",
    "per_device_batch_size",
]
