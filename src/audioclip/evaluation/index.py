"""Search for users: an embedding index of a folder of audio and images, and exact cosine search in torch.

    audioclip index DIR --out index.pt --checkpoint CKPT     # batched, progress bar, resumable
    audioclip index my/captions.csv --out index.pt          # the files of a manifest (audioclip.data.folder)
    audioclip search index.pt --text "dog barking" --top 10  # or --audio FILE / --image FILE
    audioclip index recordings/ --out long.pt --window 5 --hop 2.5   # long files, window by window

The index file (``torch.save`` of plain tensors, lists and strings, read back with ``weights_only=True``) holds the
paths, the modality of each item, its label (the class folder of a class-folder tree, underscores as spaces; a
manifest's label, labels or caption; empty for files directly in DIR), the L2-normalised embeddings (AudioCLIP's
shared space, Guzhov et al. 2021, sec. 3) and a fingerprint of the model weights. Embeddings from different weights
are not comparable, so adding to an index or searching it with other weights is refused. Indexing saves as it goes,
so an interrupted run resumes and skips the files already in the index.

With a window (`--window`, `--hop`) every audio file is indexed window by window (the file read in blocks:
`audioclip.evaluation.timeline.embed_windows`); each item keeps its start and end in seconds, so a search answers
with the file and the time in it. An index holds either whole files or windows of one length and hop.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import torch
from tqdm import tqdm

from audioclip.data.layouts import class_text
from audioclip.evaluation.retrieval import rank
from audioclip.inference import InputError, embed_image, embed_text, prepare_audio
from audioclip.models import AudioCLIP
from audioclip.outputs import write_with

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
INDEX_VERSION = 1


class Hit(NamedTuple):
    """One search result; `start` and `end` (seconds) are the window's in a windowed index, else None."""

    score: float
    path: str
    modality: str
    label: str
    start: float | None = None
    end: float | None = None


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
        from audioclip.data.layouts import read_manifest

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


def check_same_windows(index: dict, windows: tuple[float, float] | None, what: str) -> None:
    """An index holds whole files or windows of one length and hop: adding items of another kind is refused."""
    built = tuple(index["windows"]) if index.get("windows") else None
    if built != windows:
        have = f"windows of {built[0]:g} s every {built[1]:g} s" if built else "whole files"
        want = f"windows of {windows[0]:g} s every {windows[1]:g} s" if windows else "whole files"
        again = f"--window {built[0]:g} --hop {built[1]:g}" if built else "no --window"
        raise InputError(f"{what}: the index holds {have}, not {want}: index again with {again}, or build a new index")


@torch.no_grad()
def _embed_files(
    model: AudioCLIP, files: list[tuple[Path, str]], windows: tuple[float, float] | None = None
) -> tuple[list, list[tuple[Path, str]]]:
    """Embeddings of the readable files as (path, modality, embedding, start, end) (start and end: a window's, in
    seconds, else None), and the unreadable files with the reason."""
    from audioclip.evaluation.timeline import embed_windows

    done, failed = [], []
    audio_groups: dict[tuple, list] = defaultdict(list)
    for path, modality in files:
        try:
            if modality == "image":
                done.append((path, modality, embed_image(model, path), None, None))
            elif windows is not None:
                # a file's windows all at once: an interrupted run never leaves half a file in the index
                done += [(path, modality, emb, start, end) for start, end, emb in embed_windows(model, path, *windows)]
            else:
                wave = prepare_audio(path)
                # one forward pass per shape: clips of equal length and channel count share a batch
                audio_groups[tuple(wave.shape)].append((path, wave))
        except InputError as exc:
            failed.append((path, str(exc)))
    for group in audio_groups.values():
        emb = model.encode_audio(torch.cat([wave for _, wave in group])).float()
        emb = emb / emb.norm(dim=-1, keepdim=True)
        done += [(path, "audio", e, None, None) for (path, _), e in zip(group, emb, strict=True)]
    return done, failed


def build_index(
    model: AudioCLIP,
    folder: str | Path,
    out: str | Path,
    checkpoint: str,
    batch_size: int = 16,
    save_every: int = 20,
    progress: bool = True,
    window: float | None = None,
    hop: float | None = None,
) -> dict:
    """Embed every audio and image file under ``folder`` (or listed in a manifest) into the index ``out`` with its
    label, skipping files already there. With ``window`` (seconds; ``hop`` default half of it) each audio file is
    indexed window by window.

    Returns counts ``added``, ``skipped`` (already indexed), ``total`` and ``failed`` [(path, reason)]; unreadable
    files are not added, so a later run tries them again.
    """
    out = Path(out)
    windows = None
    if window is not None:
        from audioclip.data.stream import window_samples

        windows = (window, window / 2 if hop is None else hop)
        window_samples(*windows)
    elif hop is not None:
        raise ValueError("--hop: index window by window with --window SECONDS (e.g. --window 5)")
    files = labelled_media(folder)
    model_fingerprint = fingerprint(model)
    if out.exists():
        index = load_index(out)
        check_same_weights(index, model_fingerprint, str(out))
        check_same_windows(index, windows, str(out))
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
            "windows": None if windows is None else list(windows),
            "starts": [],
            "ends": [],
        }
    index.setdefault("labels", [""] * len(index["paths"]))  # an index from before labels were stored
    for key in ("starts", "ends"):  # an index from before windows: whole files
        index.setdefault(key, [None] * len(index["paths"]))
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
            done, failed = _embed_files(model, batch, windows)
            bar.update(len(batch))
            stats["failed"] += failed
            # the files left out by the latest run, kept with the index (they are tried again next run)
            index["skipped_files"] = [str(path) for path, _ in stats["failed"]]
            for path, modality, emb, start, end in done:
                index["paths"].append(str(path))
                index["modality"].append(modality)
                index["labels"].append(label_of[str(path)])
                index["starts"].append(start)
                index["ends"].append(end)
                pending.append(emb[None].cpu())
            stats["added"] += len({path for path, *_ in done})
            if (number + 1) % save_every == 0:
                flush()
    finally:
        bar.close()
        # also on Ctrl-C or an error: what was embedded is kept and the next run resumes after it
        flush()
    stats["total"] = len(set(index["paths"]))
    stats["items"] = len(index["paths"])
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
) -> list[Hit]:
    """The ``top`` nearest items to one text, audio file or image file: (cosine similarity, path, modality, label,
    and in a windowed index the window's start and end in seconds)."""
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
    starts = index.get("starts") or [None] * len(index["paths"])
    ends = index.get("ends") or [None] * len(index["paths"])
    return [
        Hit(float(scores[b]), index["paths"][i], index["modality"][i], labels[i], starts[i], ends[i])
        for b, i in zip(best.tolist(), candidates[best].tolist(), strict=True)
    ]
