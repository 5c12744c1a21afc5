"""AudioSet (Gemmeke et al. 2017) for AudioCLIP: metadata readers, preparation into LitData shards, the DataModule."""

from audioclip.data.audioset.datamodule import AudioSetDataModule
from audioclip.data.audioset.metadata import (
    NUM_CLASSES,
    AudioSetClass,
    Segment,
    read_class_labels,
    read_ontology,
    read_segments,
)

__all__ = [
    "NUM_CLASSES",
    "AudioSetClass",
    "AudioSetDataModule",
    "Segment",
    "read_class_labels",
    "read_ontology",
    "read_segments",
]
