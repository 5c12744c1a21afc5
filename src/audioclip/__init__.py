"""AudioCLIP in PyTorch Lightning: the tri-modal model, its training phases, and inference helpers.

The package in layers, each importing only the ones above it in this list (`tools/layers.py` checks it):

    constants, precision, process_group, outputs, lazy, install_check, memory    what everything may use
    models/       plain nn.Modules (no Lightning), the registry, losses, weight reading
    data/         decoding, the decoded cache, transforms, DataModules; data/audioset/ prepares AudioSet by stage
    inference     audioclip.load / classify / embed_audio / embed_image / embed_text
    evaluation/   zero-shot, querying and retrieval, index and search, the paper report, audio of any length
    export/, hear safetensors + config + model card, the Hub, ONNX; the HEAR 2021 API
    tasks/        one LightningModule per phase, the training CLI, run-safety callbacks, checkpoints, W&B
    cli, demo, doctor                                                      the `audioclip` command

docs/design.md draws the whole house. The inference helpers are imported on first use, so that `import audioclip.data`
(every DataLoader worker does it) does not pay for CLIP and the models.
"""

import warnings

from audioclip.lazy import lazy_exports

# `clip` imports pkg_resources, which warns at every start since setuptools 81 (the locked version): nothing to act on
warnings.filterwarnings("ignore", message="pkg_resources is deprecated as an API", category=UserWarning)

__all__ = [
    "classify",
    "classify_windows",
    "create_model",
    "embed_audio",
    "embed_image",
    "embed_text",
    "embed_windows",
    "list_models",
    "load",
]
__version__ = "0.1.0"

_LAZY = {
    "classify": "audioclip.inference",
    "embed_audio": "audioclip.inference",
    "embed_image": "audioclip.inference",
    "embed_text": "audioclip.inference",
    "load": "audioclip.inference",
    "classify_windows": "audioclip.evaluation.timeline",  # audio of any length, window by window
    "embed_windows": "audioclip.evaluation.timeline",
    "create_model": "audioclip.models",
    "list_models": "audioclip.models",
}

__getattr__ = lazy_exports(__name__, _LAZY)
