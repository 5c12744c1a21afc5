"""Shard parts on local disks or object stores, and the merge that makes one training set of them.

At two million clips the preparation runs as many independent shard tasks (SLURM array tasks or Ray tasks, see
docs/audioset.md). Each task packs its own clips into a LitData *part*, ``OUT[/split]/parts/{i}-of-{n}/``, written
to the output (a local path, or an ``s3://`` / ``gs://`` / any fsspec URL) with its ``index.json`` last, so a part
whose upload was cut off is not seen. ``merge`` writes ``OUT[/split]/index.json`` listing every part's chunks by
their path inside ``OUT[/split]``: no chunk is copied or re-encoded, and a late or re-run shard replaces only its part
(then ``merge`` again, in seconds). The layout follows video2dataset's shards + per-shard stats files; LitData's
``merge_datasets`` would copy every chunk instead.

URLs never go through ``pathlib`` (``Path("s3://b/x").resolve()`` is the local folder ``./s3:/b/x``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from audioclip.storage import filesystem, is_url, join, read_bytes, storage_errors, write_bytes

INDEX = "index.json"
PARTS = "parts"


def read_json(location: str | Path) -> Any | None:
    """The JSON file at ``location``, or None when there is none."""
    data = read_bytes(location)
    return None if data is None else json.loads(data)


def write_json(location: str | Path, data: Any) -> None:
    write_bytes(location, json.dumps(data).encode())


def publish(local_dir: Path, dest: str | Path) -> None:
    """Replace ``dest`` with the LitData directory ``local_dir`` (which is used up), ``index.json`` last."""
    if not is_url(dest):
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if (dest / INDEX).exists():
            (dest / INDEX).unlink()  # first, so that a crash below leaves no index over a half-replaced part
        shutil.rmtree(dest, ignore_errors=True)
        shutil.move(str(local_dir), dest)
        return
    with storage_errors(dest):
        fs, path = filesystem(dest)
        if fs.exists(path):
            if fs.exists(f"{path}/{INDEX}"):
                fs.rm(f"{path}/{INDEX}")
            fs.rm(path, recursive=True)
        files = sorted(p for p in local_dir.rglob("*") if p.is_file())
        for file in sorted(files, key=lambda p: p.name == INDEX):
            fs.put_file(str(file), f"{path}/{file.relative_to(local_dir).as_posix()}")
    shutil.rmtree(local_dir)


EMPTY = "empty.json"


def publish_empty(dest: str | Path) -> None:
    """Mark ``dest`` as a part without clips (LitData cannot write an empty dataset), so ``merge`` counts it."""
    if not is_url(dest):
        shutil.rmtree(dest, ignore_errors=True)
    else:
        with storage_errors(dest):
            fs, path = filesystem(dest)
            if fs.exists(path):
                fs.rm(path, recursive=True)
    write_json(join(dest, EMPTY), {"clips": 0})


def upload_file(local: Path, dest: str | Path) -> None:
    """Copy one file to ``dest`` (a path or URL)."""
    if not is_url(dest):
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, dest)
        return
    with storage_errors(dest):
        fs, path = filesystem(dest)
        fs.put_file(str(local), path)


def list_parts(split_dir: str | Path) -> list[str]:
    """Names (``i-of-n``) of the complete parts (an ``index.json``, or ``empty.json``) under ``split_dir/parts``."""
    parts_dir = join(split_dir, PARTS)
    if not is_url(parts_dir):
        return sorted({p.parent.name for name in (INDEX, EMPTY) for p in Path(parts_dir).glob(f"*/{name}")})
    with storage_errors(parts_dir):
        fs, path = filesystem(parts_dir)
        if not fs.exists(path):
            return []
        found = [p for name in (INDEX, EMPTY) for p in fs.glob(f"{path}/*/{name}")]
    return sorted({p.rstrip("/").split("/")[-2] for p in found})


def _part_key(name: str) -> tuple[int, int]:
    index, _, count = name.partition("-of-")
    return int(index), int(count)


def merge_split(split_dir: str | Path, *, allow_missing: bool = False, allow_empty: bool = False) -> dict:
    """Write ``split_dir/index.json`` (and summed ``label_counts.json``) over the parts in ``split_dir/parts``."""
    names = list_parts(split_dir)
    if not names:
        raise FileNotFoundError(f"{split_dir}: no complete part under {PARTS}/ (run the shard tasks first)")
    counts = {_part_key(n)[1] for n in names}
    if len(counts) > 1:
        raise ValueError(f"{split_dir}: parts of different shard counts {sorted(counts)}; remove the stale ones")
    total = counts.pop()
    missing = sorted(set(range(total)) - {_part_key(n)[0] for n in names})
    if missing and not allow_missing:
        raise FileNotFoundError(
            f"{split_dir}: parts {', '.join(f'{i}-of-{total}' for i in missing)} are missing "
            "(still running or failed); re-run them, or merge what is there with --allow-missing"
        )
    config, chunks, label_counts, clips = None, [], None, 0
    for name in sorted(names, key=_part_key):
        part = join(split_dir, PARTS, name)
        index = read_json(join(part, INDEX))
        if index is None:  # a part without clips
            continue
        keys = ("data_format", "compression", "item_loader", "data_spec")
        if config is None:
            config, first = index["config"], name
        elif any(index["config"].get(k) != config.get(k) for k in keys):
            raise ValueError(f"{part}: packed with another format than the first part; re-run it with the same options")
        chunks += [{**c, "filename": f"{PARTS}/{name}/{c['filename']}"} for c in index["chunks"]]
        part_counts = read_json(join(part, "label_counts.json"))
        if part_counts is not None:
            label_counts = (
                part_counts["counts"]
                if label_counts is None
                else [a + b for a, b in zip(label_counts, part_counts["counts"], strict=True)]
            )
        clips += sum(c["chunk_size"] for c in index["chunks"])
    if config is None:
        if allow_empty:
            return {"parts": len(names), "of": total, "missing": missing, "clips": 0}
        raise FileNotFoundError(f"{split_dir}: every part is empty; no clip to train or evaluate on")
    if label_counts is not None:
        write_json(join(split_dir, "label_counts.json"), {"clips": clips, "counts": label_counts})
    names_json = read_json(join(split_dir, PARTS, first, "class_names.json"))
    if names_json is not None:
        write_json(join(split_dir, "class_names.json"), names_json)
    write_json(join(split_dir, INDEX), {"chunks": chunks, "config": config, "updated_at": "merged"})
    return {"parts": len(names), "of": total, "missing": missing, "clips": clips}


TIERS = "tiers.json"


def list_tiers(split_dir: str | Path) -> list[int]:
    """Repeat tiers (``tier-{r}/`` folders with parts or an index) of a split packed with balance tiers."""
    if not is_url(split_dir):
        names = [p.name for p in Path(split_dir).glob("tier-*") if p.is_dir()]
    else:
        with storage_errors(split_dir):
            fs, path = filesystem(split_dir)
            names = [p.rstrip("/").split("/")[-1] for p in fs.glob(f"{path}/tier-*")] if fs.exists(path) else []
    return sorted(int(n.removeprefix("tier-")) for n in names)


def write_tiers(split_dir: str | Path) -> dict:
    """``split_dir/tiers.json`` (clips per repeat tier) and the split's summed ``label_counts.json`` and class names,
    from the tiers' own files."""
    tiers, label_counts = {}, None
    for tier in list_tiers(split_dir):
        counts = read_json(join(split_dir, f"tier-{tier}", "label_counts.json"))
        if counts is None:  # every clip of this tier failed to download or extract
            continue
        tiers[str(tier)] = counts["clips"]
        label_counts = (
            counts["counts"]
            if label_counts is None
            else [a + b for a, b in zip(label_counts, counts["counts"], strict=True)]
        )
    if not tiers:
        raise FileNotFoundError(f"{split_dir}: no tier-*/ dataset with label_counts.json")
    write_json(join(split_dir, "label_counts.json"), {"clips": sum(tiers.values()), "counts": label_counts})
    names = read_json(join(split_dir, f"tier-{min(int(t) for t in tiers)}", "class_names.json"))
    if names is not None:
        write_json(join(split_dir, "class_names.json"), names)
    write_json(join(split_dir, TIERS), {"tiers": tiers})
    return tiers


def merge(out: str | Path, *, allow_missing: bool = False) -> dict:
    """Merge every split of ``out`` (``train`` + ``val`` when the shards carved one, else ``out`` itself); a split
    packed in repeat tiers has each ``tier-{r}`` merged and a ``tiers.json`` written."""
    splits = [s for s in ("train", "val") if list_parts(join(out, s)) or list_tiers(join(out, s))] or [""]
    summary = {}
    for name in splits:
        split_dir = join(out, name) if name else out
        tiers = list_tiers(split_dir)
        if not tiers:
            summary[name or "all"] = merge_split(split_dir, allow_missing=allow_missing)
            continue
        for tier in tiers:
            tier_dir = join(split_dir, f"tier-{tier}")
            summary[f"{name or 'all'}/tier-{tier}"] = merge_split(
                tier_dir, allow_missing=allow_missing, allow_empty=True
            )
        summary[name or "all"] = {"tiers": write_tiers(split_dir)}
    return summary
