"""AudioSet (Gemmeke et al. 2017) for AudioCLIP: metadata readers, preparation into LitData shards, the DataModule."""

from audioclip.lazy import lazy_exports

# imported on first use: `audioclip prepare` needs neither Lightning nor CLIP
_LAZY = {
    "AudioSetDataModule": "audioclip.data.audioset.datamodule",
    **dict.fromkeys(
        ("NUM_CLASSES", "AudioSetClass", "Segment", "read_class_labels", "read_ontology", "read_segments"),
        "audioclip.data.audioset.metadata",
    ),
}

__all__ = [
    "NUM_CLASSES",
    "AudioSetClass",
    "AudioSetDataModule",
    "Segment",
    "read_class_labels",
    "read_ontology",
    "read_segments",
]

__getattr__ = lazy_exports(__name__, _LAZY)
