"""AudioSet (Gemmeke et al. 2017) for AudioCLIP: metadata readers, preparation into LitData shards, the DataModule."""

from audioclip.lazy import lazy_exports

# imported on first use: `audioclip prepare` needs neither Lightning nor CLIP
_LAZY = {
    "AudioSetDataModule": "audioclip.data.audioset.datamodule",
    **dict.fromkeys(
        ("NUM_CLASSES", "AudioSetClass", "Segment", "read_class_labels", "read_ontology", "read_segments"),
        "audioclip.data.audioset.metadata",
    ),
    # the stages other datasets use (AudioCaps' clips are AudioSet segments): stable names whatever module holds them
    "download": "audioclip.data.audioset.download",
    "ingest": "audioclip.data.audioset.ingest",
    "read_manifest": "audioclip.data.audioset.manifests",
}

__all__ = [
    "NUM_CLASSES",
    "AudioSetClass",
    "AudioSetDataModule",
    "Segment",
    "download",
    "ingest",
    "read_class_labels",
    "read_manifest",
    "read_ontology",
    "read_segments",
]

__getattr__ = lazy_exports(__name__, _LAZY)
