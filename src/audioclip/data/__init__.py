"""Datasets of AudioCLIP as LightningDataModules yielding the dict batches of docs/design.md, "The batch contract"."""

from audioclip.lazy import lazy_exports

# imported on first use: `audioclip prepare --help` and `import audioclip.data.audioset.metadata` need no Lightning
_LAZY = {
    "BadFileError": "audioclip.data.errors",
    "DatasetNotFoundError": "audioclip.data.errors",
    "MetadataError": "audioclip.data.errors",
    "MissingFileError": "audioclip.data.errors",
    "collate": "audioclip.data.batch",
    "per_device_batch_size": "audioclip.data.batch",
    "ESC50DataModule": "audioclip.data.esc50",
    "US8KDataModule": "audioclip.data.us8k",
    "AudioFolderDataModule": "audioclip.data.folder",
    "CaptionDataModule": "audioclip.data.captions",
}

__all__ = [
    "AudioFolderDataModule",
    "BadFileError",
    "CaptionDataModule",
    "DatasetNotFoundError",
    "ESC50DataModule",
    "MetadataError",
    "MissingFileError",
    "US8KDataModule",
    "collate",
    "per_device_batch_size",
]

__getattr__ = lazy_exports(__name__, _LAZY)
