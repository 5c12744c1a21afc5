"""What every reader of weight files shares: the error it raises and the checksum it verifies with.

Kept apart from `models.pretrained` (official tags, checkpoints) and `models.export_folder` (safetensors folders and
the Hugging Face Hub) so that both can use them without importing each other.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


class WeightsError(RuntimeError):
    """A weight file that is missing, corrupt, unsafe, or does not fit the model."""


def sha256sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
