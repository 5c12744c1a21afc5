"""The caption datasets' names and splits, importable without torch (`audioclip captions --help`, `audioclip
evaluate --help`); the datasets themselves: `audioclip.data.captions`."""

DATASETS = ("clotho", "audiocaps")
SPLITS = ("train", "val", "test")  # the official splits, by their role
CLOTHO_SPLITS = {"train": "development", "val": "validation", "test": "evaluation"}  # Clotho's names for them
