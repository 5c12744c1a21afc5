"""The evaluation datasets by name, importable without torch (the `audioclip evaluate --help` text uses them)."""

from audioclip.data.caption_names import DATASETS as CAPTION_DATASETS

# CAPTION_DATASETS: the caption retrieval sets in their official layouts (audioclip.data.captions), evaluated on their
# test split
DATASETS = ("esc50", "us8k", "audioset", "imagefolder", "folder", *CAPTION_DATASETS)
# which embeddings each dataset yields besides the class-name text
MODALITIES = {
    "esc50": ("audio",), "us8k": ("audio",), "audioset": ("audio", "image"), "imagefolder": ("image",),
    "folder": ("audio",), "clotho": ("audio",), "audiocaps": ("audio",),
}  # fmt: skip
