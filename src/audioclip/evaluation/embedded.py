"""Evaluation sets embedded once: every sample's audio / image embedding, its label set and its fold.

Datasets (Guzhov et al. 2021, sec. 4.1): ESC-50 and UrbanSound8K through their DataModules (official folds, the
centre crop of the evaluation transform), AudioSet through the shards of ``audioclip prepare audioset pack``, the
test splits of Clotho and AudioCaps (``audioclip.data.captions``: every caption of every clip), and
any ``torchvision.datasets.ImageFolder`` tree with a class-name file for ImageNet-style zero-shot (CLIP, Radford et
al. 2021, sec. 3.1.4). Under ``torchrun`` every rank embeds a strided share of the samples and the shares are
gathered, so every rank ends with the whole evaluation set.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from audioclip.data import ESC50DataModule, US8KDataModule, collate
from audioclip.data.layouts import class_text
from audioclip.data.workers import worker_context
from audioclip.evaluation.names import CAPTION_DATASETS, DATASETS, MODALITIES
from audioclip.inference import InputError
from audioclip.models import AudioCLIP
from audioclip.process_group import rank_and_world


@dataclass
class EmbeddedSet:
    """An evaluation set after the forward passes; everything the metrics need."""

    dataset: str
    root: str
    class_names: list[str]
    labels: list[tuple[int, ...]]  # sorted class indices of each sample (one for single-label datasets)
    folds: list[int]  # the official fold of each sample; 0 where the dataset has none
    ids: list[str]
    embeddings: dict[str, torch.Tensor]  # modality -> (N, D) L2-normalised
    # "class" (one label each), "multilabel" or "caption" (class_names are then the captions, and each sample's
    # labels the indices of its own captions: one for a caption manifest, five for Clotho)
    task: str = "class"
    left_out: list[str] = field(default_factory=list)  # samples of the set that could not be evaluated (no audio)

    def caption_relevance(self) -> torch.Tensor:
        """(captions, samples) bool of a caption task: caption c describes sample n (c is among n's labels)."""
        relevant = torch.zeros(len(self.class_names), len(self), dtype=torch.bool)
        for sample, captions in enumerate(self.labels):
            relevant[list(captions), sample] = True
        return relevant

    @property
    def folds_used(self) -> list[int]:
        return sorted(set(self.folds))

    def __len__(self) -> int:
        return len(self.ids)


def check_dataset(name: str) -> str:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return name


def read_class_names(path: str | Path, folders: Sequence[str]) -> list[str]:
    """Class names for the ImageFolder classes ``folders`` (sorted folder names).

    One line per class: ``folder<TAB>name`` (any order), or just ``name`` in the order of the sorted folder names.
    Duplicate names are refused: two classes with one prompt cannot be told apart (ImageNet's two "crane"s need
    distinct names, as open_clip's list gives them).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: class-name file does not exist")
    lines = [line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if all("\t" in line for line in lines):
        pairs = [line.split("\t", 1) for line in lines]
        folder_dups = sorted({f for f, _ in pairs if [p[0] for p in pairs].count(f) > 1})
        if folder_dups:
            raise InputError(f"{path}: folder(s) listed twice: {', '.join(folder_dups)}")
        mapping = {folder.strip(): name.strip() for folder, name in pairs}
        missing = [f for f in folders if f not in mapping]
        if missing:
            raise InputError(f"{path}: no name for class folder(s) {', '.join(missing[:5])}")
        names = [mapping[f] for f in folders]
    else:
        names = [line.strip() for line in lines]
        if len(names) != len(folders):
            raise InputError(f"{path}: {len(names)} class names for {len(folders)} class folders")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"{path}: duplicate class name(s) {', '.join(duplicates)}; give every class its own name")
    return names


def _share(dataset: Dataset) -> Dataset:
    """This rank's strided share of a map-style dataset (all of it in one process)."""
    rank, world = rank_and_world()
    return dataset if world == 1 else Subset(dataset, range(rank, len(dataset), world))


def _rank_loader(dataset: Dataset, batch_size: int, num_workers: int, collate_fn) -> DataLoader:  # noqa: ANN001
    """A loader over this rank's share, its workers started safely for a process group (``data.workers``)."""
    return DataLoader(
        _share(dataset), batch_size=batch_size, num_workers=num_workers, collate_fn=collate_fn,
        multiprocessing_context=worker_context(num_workers),
    )  # fmt: skip


def _gather(part: dict) -> dict:
    """Concatenate every rank's embedded share (lists and tensors) in rank order."""
    rank, world = rank_and_world()
    if world == 1:
        return part
    shares: list[dict] = [{} for _ in range(world)]
    dist.all_gather_object(shares, {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in part.items()})
    return {
        k: torch.cat([s[k] for s in shares]) if isinstance(part[k], torch.Tensor) else sum((s[k] for s in shares), [])
        for k in part
    }


@torch.no_grad()
def _embed_batches(
    model: AudioCLIP, batches: Iterable[dict], modalities: Sequence[str], desc: str, progress: bool
) -> dict:
    out: dict = {"labels": [], "ids": [], "folds": [], **{m: [] for m in modalities}}
    for batch in tqdm(batches, desc=desc, unit="batch", disable=not progress):
        emb = model.embed(
            audio=batch["audio"].to(model.device) if "audio" in modalities else None,
            image=batch["image"].to(model.device) if "image" in modalities else None,
        )
        for m in modalities:
            out[m].append(emb[m].float().cpu())
        target = batch["target"]
        if target.dim() == 2:  # multi-hot (AudioSet)
            out["labels"] += [tuple(row.nonzero().flatten().tolist()) for row in target]
        else:
            out["labels"] += [(int(t),) for t in target]
        out["ids"] += list(batch["id"])
        out["folds"] += [0] * len(target)  # the fold-based datasets set theirs per loader
    dim = model.config.embed_dim
    return {
        **{k: out[k] for k in ("labels", "ids", "folds")},
        **{m: torch.cat(out[m]) if out[m] else torch.empty(0, dim) for m in modalities},
    }


def _folded(
    dataset: str, root: Path, folds: Sequence[int] | None, batch_size: int, num_workers: int, progress: bool
) -> Iterator[tuple[int, list[str], DataLoader]]:
    module_cls = ESC50DataModule if dataset == "esc50" else US8KDataModule
    chosen = list(folds) if folds else list(range(1, module_cls.num_folds + 1))
    for fold in chosen:
        dm = module_cls(
            root, fold=fold, batch_size=batch_size, num_workers=num_workers, augment=False, progress=progress
        )
        dm.prepare_data()
        dm.setup("test")
        loader = _rank_loader(dm.test_set, batch_size, num_workers, collate)
        yield fold, dm.class_names, loader


class _ImageFolderItems(Dataset):
    def __init__(self, folder) -> None:
        self.folder = folder

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int) -> dict:
        image, target = self.folder[index]
        return {"image": image, "target": target, "id": self.folder.samples[index][0]}


def _image_folder(root: Path, class_file: str | Path | None, resolution: int):
    from torchvision.datasets import ImageFolder

    from audioclip.models.preprocess import image_transform

    if not root.is_dir():
        raise InputError(f"{root}: no such folder")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise InputError(f"{root}: empty: an ImageFolder tree is ROOT/<class folder>/<image files>")
    try:
        folder = ImageFolder(str(root), transform=image_transform(resolution))
    except FileNotFoundError as exc:
        raise InputError(f"{root}: {str(exc).splitlines()[0]}") from None
    if class_file:
        return read_class_names(class_file, folder.classes), _ImageFolderItems(folder)
    return [class_text(c) for c in folder.classes], _ImageFolderItems(folder)


def _image_collate(items: list[dict]) -> dict:
    return {
        "image": torch.stack([i["image"] for i in items]),
        "target": torch.tensor([i["target"] for i in items]),
        "id": [i["id"] for i in items],
    }


def embed_dataset(
    model: AudioCLIP,
    dataset: str,
    root: str | Path,
    folds: Sequence[int] | None = None,
    class_names_file: str | Path | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = True,
    manifest: str | Path | None = None,
    clip_seconds: float | None = None,
) -> EmbeddedSet:
    """Embed an evaluation set: ESC-50 / US8K on ``folds`` (default: every official fold, i.e. the whole dataset),
    the AudioSet shard directory ``root``, an ImageFolder tree ``root``, or (``folder``) every clip of a class-folder
    tree ``root`` or a CSV/TSV ``manifest`` (``folds``: those of its fold column only), or the test split of Clotho
    or AudioCaps (``root``), centre ``clip_seconds`` (default 5 for a tree or manifest, 10 for Clotho and
    AudioCaps: AudioCaps' clips are 10 s, and the model was trained on 10 s AudioSet clips)."""
    check_dataset(dataset)
    root = Path(root)
    modalities = MODALITIES[dataset]
    parts: list[dict] = []
    task = "multilabel" if dataset == "audioset" else "class"
    left_out: list[str] = []
    if dataset in CAPTION_DATASETS:
        from audioclip.data.captions import CaptionDataModule

        if folds:
            raise ValueError(f"{dataset} has no folds; it is evaluated on its official test split: drop --fold")
        dm = CaptionDataModule(dataset, root, splits=("test",), num_workers=num_workers, augment=False,
                               clip_seconds=clip_seconds or 10.0, progress=progress)  # fmt: skip
        loader = _rank_loader(dm.evaluation_set(), batch_size, num_workers, collate)
        parts.append(_embed_batches(model, loader, modalities, f"Embedding {dm.dataset_name} test", progress))
        task, class_names, left_out = "caption", [], dm.missing + dm.skipped_files
    elif dataset == "folder":
        from audioclip.data import AudioFolderDataModule

        if folds is not None and len(folds) > 1:
            raise ValueError("folder: evaluate one fold (--fold) or the whole set")
        dm = AudioFolderDataModule(
            root=None if manifest is not None else root, manifest=manifest, num_workers=num_workers, augment=False,
            clip_seconds=clip_seconds or 5.0, max_seconds=max(clip_seconds or 5.0, 10.0), progress=progress,
        )  # fmt: skip
        items = dm.evaluation_set(folds[0] if folds else None)
        task, class_names = dm.task, dm.captions if dm.task == "caption" else dm.class_names
        loader = _rank_loader(items, batch_size, num_workers, collate)
        part = _embed_batches(model, loader, modalities, f"Embedding {dm.source.name}", progress)
        fold_of = dm.folds_by_id()
        part["folds"] = [fold_of[i] for i in part["ids"]]
        parts.append(part)
        root = dm.source
    elif dataset in ("esc50", "us8k"):
        class_names: list[str] = []
        for fold, class_names, loader in _folded(dataset, root, folds, batch_size, num_workers, progress):
            part = _embed_batches(model, loader, modalities, f"Embedding {dataset} fold {fold}", progress)
            part["folds"] = [fold] * len(part["ids"])
            parts.append(part)
    elif dataset == "audioset":
        from audioclip.data.audioset import AudioSetDataModule  # imports litdata: only when AudioSet is asked for

        if folds:
            raise ValueError("AudioSet has no folds; evaluate on a shard directory (--root) instead of --fold")
        dm = AudioSetDataModule(
            test_dir=str(root), batch_size=batch_size * rank_and_world()[1], num_workers=num_workers
        )
        dm.setup("test")
        class_names = dm.class_names
        # LitData splits the shards over the ranks itself
        parts.append(_embed_batches(model, dm.test_dataloader(), modalities, "Embedding audioset", progress))
    else:
        if folds:
            raise ValueError("an ImageFolder tree has no folds; drop --fold")
        class_names, items = _image_folder(root, class_names_file, model.visual.input_resolution)
        loader = _rank_loader(items, batch_size, num_workers, _image_collate)
        parts.append(_embed_batches(model, loader, modalities, "Embedding images", progress))
    merged = _gather(
        {
            "labels": sum((p["labels"] for p in parts), []),
            "ids": sum((p["ids"] for p in parts), []),
            "folds": sum((p["folds"] for p in parts), []),
            **{m: torch.cat([p[m] for p in parts]) for m in modalities},
        }
    )
    if not merged["ids"]:
        raise InputError(f"{root}: the {dataset} evaluation set is empty")
    if dataset in CAPTION_DATASETS:
        class_names, merged["labels"] = _every_caption(dm, merged["labels"])
    return EmbeddedSet(
        dataset=dataset,
        root=str(root),
        class_names=list(class_names),
        labels=merged["labels"],
        folds=[int(f) for f in merged["folds"]],
        ids=merged["ids"],
        embeddings={m: merged[m] for m in modalities},
        task=task,
        left_out=left_out,
    )


def _every_caption(dm, labels: list[tuple[int, ...]]) -> tuple[list[str], list[tuple[int, ...]]]:  # noqa: ANN001
    """(every caption of the embedded clips, each clip's labels as the indices of its own captions) from each clip's
    label, its index in the caption DataModule."""
    captions: list[str] = []
    own: list[tuple[int, ...]] = []
    for (target,) in labels:
        texts = dm.caption_texts(target)
        own.append(tuple(range(len(captions), len(captions) + len(texts))))
        captions += texts
    return captions, own
