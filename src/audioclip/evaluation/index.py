"""Search for users: an embedding index of a folder of audio and images, and exact cosine search in torch.

    audioclip index DIR --out index.pt --checkpoint CKPT     # batched, progress bar, resumable
    audioclip index my/captions.csv --out index.pt          # the files of a manifest (audioclip.data.folder)
    audioclip search index.pt --text "dog barking" --top 10  # or --audio FILE / --image FILE

The index file (``torch.save`` of plain tensors, lists and strings, read back with ``weights_only=True``) holds the
paths, the modality of each item, its label (the class folder of a class-folder tree, underscores as spaces; a
manifest's label, labels or caption; empty for files directly in DIR), the L2-normalised embeddings (AudioCLIP's
shared space, Guzhov et al. 2021, sec. 3) and a fingerprint of the model weights. Embeddings from different weights
are not comparable, so adding to an index or searching it with other weights is refused. Indexing saves as it goes,
so an interrupted run resumes and skips the files already in the index.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from pathlib import Path

import torch
from tqdm import tqdm

from audioclip.data.batch import class_text
from audioclip.evaluation.retrieval import rank
from audioclip.inference import InputError, embed_image, embed_text, prepare_audio
from audioclip.models import AudioCLIP
from audioclip.outputs import write_with

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
INDEX_VERSION = 1


def fingerprint(model: AudioCLIP) -> str:
    """sha256 of the weights (names, dtypes, shapes, bytes): equal for a state dict and a Lightning checkpoint of the
    same weights, unlike a hash of the file."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def find_media(folder: str | Path) -> list[tuple[Path, str]]:
    """(path, "audio" | "image") of every audio and image file under ``folder``, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    kinds = {**dict.fromkeys(AUDIO_SUFFIXES, "audio"), **dict.fromkeys(IMAGE_SUFFIXES, "image")}
    found = [(p.resolve(), kinds[p.suffix.lower()]) for p in sorted(folder.rglob("*")) if p.suffix.lower() in kinds]
    if not found:
        raise InputError(
            f"{folder}: no audio ({', '.join(AUDIO_SUFFIXES)}) or image ({', '.join(IMAGE_SUFFIXES)}) files"
        )
    return found


def labelled_media(source: str | Path) -> list[tuple[Path, str, str]]:
    """(path, modality, label) of the files of a folder (label: the class folder) or a CSV/TSV manifest."""
    source = Path(source)
    if source.is_file() and source.suffix.lower() in (".csv", ".tsv"):
        from audioclip.data.folder import read_manifest

        _, records, names = read_manifest(source)
        return [
            (record.path.resolve(), "audio", record.caption or ", ".join(names[i] for i in record.labels))
            for record in records
        ]
    resolved = source.resolve()
    return [
        (path, modality, class_text(path.relative_to(resolved).parts[0]) if len(path.relative_to(resolved).parts) > 1
         else "")
        for path, modality in find_media(source)
    ]  # fmt: skip


def load_index(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such index file (build one with `audioclip index DIR --out {path}`)")
    try:
        index = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a file that is not a torch.save archive
        raise InputError(f"{path}: not an index file ({str(exc).strip().splitlines()[0]})") from None
    if not isinstance(index, dict) or index.get("version") != INDEX_VERSION:
        raise InputError(f"{path}: not an audioclip index (version {INDEX_VERSION})")
    return index


def _save(index: dict, path: Path) -> None:
    # written aside and renamed, so an interrupted save or a full disk never leaves a truncated index behind
    write_with(path, "--out", lambda file: torch.save(index, file))


def check_same_weights(index: dict, model_fingerprint: str, what: str) -> None:
    if index["fingerprint"] != model_fingerprint:
        raise InputError(
            f"{what}: the index was built with other weights ({index['checkpoint']}, fingerprint "
            f"{index['fingerprint'][:12]}) than this checkpoint (fingerprint {model_fingerprint[:12]}); embeddings of "
            "different checkpoints are not comparable: use that checkpoint, or build a new index"
        )


@torch.no_grad()
def _embed_files(model: AudioCLIP, files: list[tuple[Path, str]]) -> tuple[list, list[tuple[Path, str]]]:
    """Embeddings of the readable files as (path, modality, embedding), and the unreadable ones with the reason."""
    done, failed = [], []
    audio_groups: dict[tuple, list] = defaultdict(list)
    for path, modality in files:
        try:
            if modality == "image":
                done.append((path, modality, embed_image(model, path)))
            else:
                wave = prepare_audio(path)
                # one forward pass per shape: clips of equal length and channel count share a batch
                audio_groups[tuple(wave.shape)].append((path, wave))
        except InputError as exc:
            failed.append((path, str(exc)))
    for group in audio_groups.values():
        emb = model.encode_audio(torch.cat([wave for _, wave in group])).float()
        emb = emb / emb.norm(dim=-1, keepdim=True)
        done += [(path, "audio", e) for (path, _), e in zip(group, emb, strict=True)]
    return done, failed


def build_index(
    model: AudioCLIP,
    folder: str | Path,
    out: str | Path,
    checkpoint: str,
    batch_size: int = 16,
    save_every: int = 20,
    progress: bool = True,
) -> dict:
    """Embed every audio and image file under ``folder`` (or listed in a manifest) into the index ``out`` with its
    label, skipping files already there.

    Returns counts ``added``, ``skipped`` (already indexed), ``total`` and ``failed`` [(path, reason)]; unreadable
    files are not added, so a later run tries them again.
    """
    out = Path(out)
    files = labelled_media(folder)
    model_fingerprint = fingerprint(model)
    if out.exists():
        index = load_index(out)
        check_same_weights(index, model_fingerprint, str(out))
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        index = {
            "version": INDEX_VERSION,
            "fingerprint": model_fingerprint,
            "checkpoint": checkpoint,
            "model": getattr(model, "model_name", type(model).__name__),
            "paths": [],
            "modality": [],
            "labels": [],
            "embeddings": torch.empty(0, model.config.embed_dim),
        }
    index.setdefault("labels", [""] * len(index["paths"]))  # an index from before labels were stored
    known = set(index["paths"])
    label_of = {str(path): label for path, _, label in files}
    todo = [(path, modality) for path, modality, _ in files if str(path) not in known]
    stats = {"added": 0, "skipped": len(files) - len(todo), "failed": [], "total": 0}
    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    pending: list[torch.Tensor] = []

    def flush() -> None:
        if pending:
            index["embeddings"] = torch.cat([index["embeddings"], *pending])
            pending.clear()
        _save(index, out)

    # counted in files, so that the bar's rate is the clips/s `make bench-index` measures
    bar = tqdm(total=len(todo), desc=f"Indexing {folder}", unit="file", disable=not progress)
    try:
        for number, batch in enumerate(batches):
            done, failed = _embed_files(model, batch)
            bar.update(len(batch))
            stats["failed"] += failed
            # the files left out by the latest run, kept with the index (they are tried again next run)
            index["skipped_files"] = [str(path) for path, _ in stats["failed"]]
            for path, modality, emb in done:
                index["paths"].append(str(path))
                index["modality"].append(modality)
                index["labels"].append(label_of[str(path)])
                pending.append(emb[None].cpu())
            stats["added"] += len(done)
            if (number + 1) % save_every == 0:
                flush()
    finally:
        bar.close()
        # also on Ctrl-C or an error: what was embedded is kept and the next run resumes after it
        flush()
    stats["total"] = len(index["paths"])
    return stats


@torch.no_grad()
def search(
    index: dict,
    model: AudioCLIP,
    text: str | None = None,
    audio: str | Path | None = None,
    image: str | Path | None = None,
    top: int = 10,
    modality: str | None = None,
    template: str = "{}",
) -> list[tuple[float, str, str, str]]:
    """The ``top`` nearest items (cosine similarity, path, modality, label) to one text, audio file or image file."""
    given = [x for x in (text, audio, image) if x is not None]
    if len(given) != 1:
        raise InputError("search needs exactly one query: text, audio or image")
    check_same_weights(index, fingerprint(model), "search")
    if text is not None:
        query = embed_text(model, [text], template)[0]
    elif audio is not None:
        query = model.encode_audio(prepare_audio(audio))[0].float()
        query = query / query.norm()
    else:
        query = embed_image(model, image)
    keep = torch.tensor([modality is None or m == modality for m in index["modality"]], dtype=torch.bool)
    if not keep.any():
        raise InputError(f"the index holds no {modality} items")
    candidates = keep.nonzero().flatten()
    scores = index["embeddings"][candidates].float() @ query.cpu()
    # the ranking (and tie rule) of the retrieval metrics, so search shows what they score
    best = rank(scores[None], top)[0]
    labels = index.get("labels") or [""] * len(index["paths"])
    return [
        (float(scores[b]), index["paths"][i], index["modality"][i], labels[i])
        for b, i in zip(best.tolist(), candidates[best].tolist(), strict=True)
    ]
