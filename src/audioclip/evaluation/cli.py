"""`audioclip evaluate`, `audioclip index` and `audioclip search`: argument parsing and printing.

    audioclip evaluate zeroshot --dataset esc50 --root data/esc50 --checkpoint CKPT [--fold 1] [--template "{}" ...]
    audioclip evaluate query --dataset us8k --root data/us8k --checkpoint CKPT [--pair text:audio ...]
    audioclip index DIR --out index.pt --checkpoint CKPT
    audioclip search index.pt --text "dog barking" | --audio FILE | --image FILE [--top 10]

Evaluation results are written as JSON to runs/eval/<name>/results.json, where `make report` finds them. Under
`torchrun --nproc_per_node N -m audioclip.cli evaluate ...` each rank embeds its share of the samples and the
metrics are synchronised across the ranks (see `audioclip.evaluation.query`).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import torch
import torch.distributed as dist

from audioclip.evaluation.datasets import DATASETS, check_dataset, embed_dataset
from audioclip.evaluation.index import build_index, fingerprint, load_index, search
from audioclip.evaluation.query import default_pairs, query
from audioclip.evaluation.zeroshot import check_templates, protocol, zeroshot
from audioclip.inference import InputError, load

NUM_FOLDS = {"esc50": 5, "us8k": 10}


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and dist.is_initialized():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(name)


def _start_distributed() -> None:
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def _templates(args: argparse.Namespace) -> list[str]:
    templates = list(args.template or [])
    if args.templates_file:
        path = Path(args.templates_file)
        if not path.is_file():
            raise InputError(f"{path}: templates file does not exist")
        templates += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return check_templates(templates)


def _pairs(specs: Sequence[str] | None) -> list[tuple[str, str]] | None:
    if not specs:
        return None
    pairs = []
    for spec in specs:
        parts = spec.split(":")
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"--pair {spec!r}: write QUERY:RESULT, e.g. text:audio")
        pairs.append((parts[0], parts[1]))
    return pairs


def _percent(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _evaluate(args: argparse.Namespace) -> int:
    check_dataset(args.dataset)
    templates = _templates(args)
    pairs = _pairs(args.pair) if args.task == "query" else None
    root = args.root or (f"data/{args.dataset}" if args.dataset in NUM_FOLDS else None)
    if root is None:
        raise ValueError(f"--root: give the {args.dataset} location (a shard directory or an ImageFolder tree)")
    if args.fold is not None and args.dataset in NUM_FOLDS and not 1 <= args.fold <= NUM_FOLDS[args.dataset]:
        raise ValueError(f"--fold must be in 1..{NUM_FOLDS[args.dataset]} for {args.dataset}, got {args.fold}")
    _start_distributed()
    is_main = not dist.is_initialized() or dist.get_rank() == 0
    model = load(args.checkpoint, model_name=args.model, device=_device(args.device))
    data = embed_dataset(
        model,
        args.dataset,
        root,
        folds=[args.fold] if args.fold is not None else None,
        class_names_file=args.class_names,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        progress=is_main,
    )
    meta = {
        "checkpoint": str(args.checkpoint),
        "fingerprint": fingerprint(model),
        "model": model.model_name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if args.task == "zeroshot":
        result = {**zeroshot(model, data, templates, NUM_FOLDS.get(args.dataset)), **meta}
    else:
        rows = [query(model, data, q, r, templates) for q, r in pairs or default_pairs(data)]
        result = {
            "task": "query",
            "dataset": args.dataset,
            "root": str(root),
            "templates": templates,
            "num_samples": len(data),
            "protocol": protocol(data, NUM_FOLDS.get(args.dataset)),
            "folds": data.folds_used if args.dataset in NUM_FOLDS else [],
            "results": rows,
            **meta,
        }
    if is_main:
        out = Path(args.out) / (args.name or f"{args.task}-{args.dataset}") / "results.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        _print_result(result)
        print(f"Results: {out}")
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


def _print_result(result: dict) -> None:
    templates = ", ".join(repr(t) for t in result["templates"])
    if result["task"] == "zeroshot":
        print(f"Zero-shot {result['dataset']} ({len(result['class_names'])} classes, templates {templates}), "
              f"evaluated on {result['protocol']}")  # fmt: skip
        if "map" in result:
            print("  mAP " + "  ".join(f"{k}: {_percent(v)}" for k, v in result["map"].items()))
            if result.get("map_classes_left_out"):
                print(f"  {result['map_classes_left_out']} class(es) without a positive clip left out of the mean")
            return
        print(f"  accuracy: {_percent(result['accuracy'])}")
        if len(result["fold_accuracy"]) > 1:
            folds = "  ".join(f"{k}: {_percent(v)}" for k, v in result["fold_accuracy"].items())
            print(f"  per fold: {folds}")
            print(f"  mean ± std over folds: {_percent(result['fold_mean'])} ± {_percent(result['fold_std'])}")
        return
    print(f"Querying {result['dataset']} (templates {templates}), evaluated on {result['protocol']}")
    print(f"  {'query -> result':<18} {'queries':>8} {'P@1':>7} {'R@1':>7} {'mAP':>7}")
    for row in result["results"]:
        pair = f"{row['query']} -> {row['result']}"
        print(f"  {pair:<18} {row['num_queries']:>8} {_percent(row['p@1']):>7} {_percent(row['r@1']):>7} "
              f"{_percent(row['map']):>7}")  # fmt: skip


def _model_args(p: argparse.ArgumentParser, checkpoint_default: str | None = "full") -> None:
    p.add_argument("--checkpoint", default=checkpoint_default, help="official tag (full, partial) or a checkpoint path")
    p.add_argument("--model", default=None, help="registered model name, when it can't be read off the file")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda")


def _evaluate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audioclip evaluate", description="zero-shot classification and querying")
    sub = parser.add_subparsers(dest="task", required=True)
    for task, help_text in (
        ("zeroshot", "zero-shot classification against the class names"),
        ("query", "cross-modal querying: P@1, R@1, mAP"),
    ):
        p = sub.add_parser(task, help=help_text)
        p.add_argument("--dataset", required=True, help=f"one of {', '.join(DATASETS)}")
        p.add_argument("--root", help="dataset root (default data/<dataset>), AudioSet shard dir or ImageFolder tree")
        p.add_argument("--fold", type=int, help="evaluate one official fold only (default: every fold)")
        p.add_argument("--template", action="append", help='text template, repeatable (default "{}"); averaged')
        p.add_argument("--templates-file", help="a file of templates, one per line, averaged")
        p.add_argument("--class-names", help="imagefolder: class-name file (one name per line, or folder<TAB>name)")
        p.add_argument("--batch-size", type=int, default=32)
        p.add_argument("--num-workers", type=int, default=0)
        p.add_argument("--out", default="runs/eval", help="results go to OUT/NAME/results.json")
        p.add_argument("--name", help="result name (default: <task>-<dataset>)")
        if task == "query":
            p.add_argument("--pair", action="append", help="QUERY:RESULT modalities, repeatable (default: all)")
        _model_args(p)
    return parser


def evaluate(argv: Sequence[str]) -> int:
    return _evaluate(_evaluate_parser().parse_args(argv))


def index(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="audioclip index", description="embed a folder of audio and images")
    parser.add_argument("folder", help="folder searched recursively for audio and image files")
    parser.add_argument("--out", default="index.pt", help="index file; an existing one is resumed")
    parser.add_argument("--batch-size", type=int, default=16)
    _model_args(parser)
    args = parser.parse_args(argv)
    model = load(args.checkpoint, model_name=args.model, device=_device(args.device))
    # an absolute path, so that `search` finds the weights from any working directory
    checkpoint = str(Path(args.checkpoint).resolve()) if Path(args.checkpoint).is_file() else str(args.checkpoint)
    stats = build_index(model, args.folder, args.out, checkpoint, batch_size=args.batch_size)
    print(f"{args.out}: {stats['total']} items ({stats['added']} added, {stats['skipped']} already indexed)")
    if stats["failed"]:
        print(f"skipped {len(stats['failed'])} unreadable file(s), tried again next run:")
        for path, reason in stats["failed"]:
            print(f"  {reason}" if str(path) in reason else f"  {path}: {reason}")
    return 0


def search_cli(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="audioclip search", description="nearest items of an index")
    parser.add_argument("index", help="an index file written by `audioclip index`")
    query_group = parser.add_mutually_exclusive_group(required=True)
    query_group.add_argument("--text")
    query_group.add_argument("--audio", help="an audio file")
    query_group.add_argument("--image", help="an image file")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--modality", choices=["audio", "image"], help="only results of this modality")
    parser.add_argument("--template", default="{}", help="template for --text")
    _model_args(parser, checkpoint_default=None)
    args = parser.parse_args(argv)
    idx = load_index(args.index)
    checkpoint = args.checkpoint or idx["checkpoint"]  # the index remembers the weights it was built with
    model = load(checkpoint, model_name=args.model, device=_device(args.device))
    hits = search(idx, model, args.text, args.audio, args.image, args.top, args.modality, args.template)
    for rank, (score, path, modality) in enumerate(hits, start=1):
        print(f"{rank:>3}. {score:+.4f}  {modality:<5}  {path}")
    return 0
