"""An evaluation set's embeddings computed once and kept beside the results, for evaluations that re-read them
(the linear probe fits a classifier per fold and per regularisation strength on the same frozen embeddings).

A cached set is valid for one key: the weights' fingerprint (`audioclip.evaluation.index.fingerprint`: the same for a
state dict and a Lightning checkpoint of the same weights), the precision they ran in, the dataset and its location,
the clip length, and a signature of the data (every file's relative path, size and mtime, hidden folders such as the
decoded-audio cache left out). Any change embeds again; nothing stale is ever read. The file is
``CACHE_DIR/<dataset>-<key>.pt``, written aside and renamed (`audioclip.outputs.write_with`) and read back with
``torch.load(weights_only=True)``: plain tensors, lists and strings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import torch

from audioclip.evaluation.embedded import EmbeddedSet, embed_dataset
from audioclip.models import AudioCLIP
from audioclip.outputs import write_with

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when what a cached set holds changes


def data_signature(source: Path) -> str:
    """sha256 over the relative path, size and mtime of every file under ``source`` (a folder, or a manifest's
    folder), leaving out hidden files and folders: the decoded-audio cache lives in one and grows on first use."""
    folder = source if source.is_dir() else source.parent
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            stat = path.stat()
            digest.update(f"{relative}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cache_key(model_fingerprint: str, precision: str, dataset: str, root: Path, manifest: Path | None,
              clip_seconds: float) -> str:  # fmt: skip
    source = manifest if manifest is not None else root
    fields = {
        "format": CACHE_FORMAT, "fingerprint": model_fingerprint, "precision": precision, "dataset": dataset,
        "root": str(root.resolve()), "manifest": str(manifest.resolve()) if manifest else None,
        "clip_seconds": clip_seconds if dataset == "folder" else None, "data": data_signature(source),
    }  # fmt: skip
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _read(path: Path, key: str) -> EmbeddedSet | None:
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: embed again rather than fail
        log.warning("%s: unreadable embedding cache (%s); embedding again", path, str(exc).splitlines()[0])
        return None
    if not isinstance(stored, dict) or stored.get("key") != key:
        return None
    fields = stored["set"]
    fields["labels"] = [tuple(labels) for labels in fields["labels"]]
    return EmbeddedSet(**fields)


def cached_embed_dataset(
    model: AudioCLIP,
    model_fingerprint: str,
    cache_dir: str | Path,
    dataset: str,
    root: str | Path,
    manifest: str | Path | None = None,
    clip_seconds: float = 5.0,
    write: bool = True,
    **embed_kwargs,
) -> tuple[EmbeddedSet, Path, bool]:
    """(the whole evaluation set embedded, its cache file, whether it came from the cache): ``embed_dataset`` over
    every fold, or the cached result of an earlier call with the same key. ``write``: save a fresh result (rank 0
    only under DDP, where every rank embeds its share and holds the gathered set)."""
    root, manifest = Path(root), Path(manifest) if manifest is not None else None
    key = cache_key(model_fingerprint, model.precision, dataset, root, manifest, clip_seconds)
    path = Path(cache_dir) / f"{dataset}-{key[:20]}.pt"
    if path.is_file():
        found = _read(path, key)
        if found is not None:
            return found, path, True
    data = embed_dataset(model, dataset, root, manifest=manifest, clip_seconds=clip_seconds, **embed_kwargs)
    if write:
        stored = {"key": key, "set": dataclasses.asdict(data)}
        write_with(path, "--cache-dir", lambda file: torch.save(stored, file))
    return data, path, False
