"""`audioclip evaluate`, `audioclip index` and `audioclip search`: argument parsing and printing.

    audioclip evaluate zeroshot --dataset esc50 --root data/esc50 --checkpoint CKPT [--fold 1] [--template "{}" ...]
    audioclip evaluate query --dataset us8k --root data/us8k --checkpoint CKPT [--pair text:audio ...]
    audioclip evaluate zeroshot --dataset folder --root MY_TREE | --manifest MY.csv --checkpoint CKPT
    audioclip evaluate query --dataset folder --manifest captions.csv --checkpoint CKPT   # R@1/5/10, mAP@10
    audioclip evaluate query --dataset clotho --root data/clotho --checkpoint CKPT       # t2a and a2t, test split
    audioclip evaluate probe --dataset esc50 --root data/esc50 --checkpoint CKPT   # linear probe, per fold
    audioclip index DIR | MANIFEST.csv --out index.pt --checkpoint CKPT
    audioclip search index.pt --text "dog barking" | --audio FILE | --image FILE [--top 10]
    audioclip index recordings/ --out long.pt --window 5 --hop 2.5       # long files, window by window

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
from typing import TYPE_CHECKING

from audioclip.constants import FOLDS
from audioclip.evaluation.names import CAPTION_DATASETS, DATASETS
from audioclip.outputs import check_writable_dir, write_text

if TYPE_CHECKING:
    import torch

# torch, the models and the datasets are imported once the arguments are parsed: `--help` answers at once
PROBE_DATASETS = ("esc50", "us8k", "folder")  # the linear probe needs one class per clip



def _device(name: str) -> torch.device:
    import torch
    import torch.distributed as dist

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and dist.is_initialized():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(name)


def _start_distributed() -> None:
    """Join the process group when started by torchrun (WORLD_SIZE > 1).

    On GPUs each rank first takes its own device (LOCAL_RANK), as NCCL's collectives need, and the group carries
    both CPU tensors (gloo: the gathered embeddings, pickled objects) and CUDA tensors (nccl)."""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
            dist.init_process_group("cpu:gloo,cuda:nccl")
        else:
            dist.init_process_group("gloo")


def _templates(args: argparse.Namespace) -> list[str]:
    from audioclip.evaluation.zeroshot import check_templates
    from audioclip.inference import InputError

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


def _shown(text: str) -> str:
    """A file name that is not valid UTF-8 printed with U+FFFD for its odd bytes, not a UnicodeEncodeError."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _percent(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _evaluate(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from audioclip.data.layouts import manifest_task
    from audioclip.data.provenance import data_kind
    from audioclip.evaluation.embedded import check_dataset, embed_dataset
    from audioclip.evaluation.index import fingerprint
    from audioclip.evaluation.query import default_pairs, query
    from audioclip.evaluation.zeroshot import evaluated_on, zeroshot
    from audioclip.inference import InputError
    from audioclip.models.lineage import result_fields
    from audioclip.process_group import rank_and_world

    check_dataset(args.dataset)
    templates = _templates(args)
    pairs = _pairs(args.pair) if args.task == "query" else None
    if args.manifest is not None and args.dataset != "folder":
        raise ValueError(f"--manifest is for --dataset folder, not {args.dataset}")
    if args.dataset == "folder" and (args.root is None) == (args.manifest is None):
        raise ValueError("--dataset folder: give --root (a class-folder tree) or --manifest (a CSV/TSV file)")
    if args.task == "zeroshot" and args.dataset in CAPTION_DATASETS:
        raise InputError(f"{args.dataset}: a caption dataset has no classes; use `audioclip evaluate query`")
    if args.task == "zeroshot" and args.manifest and manifest_task(Path(args.manifest)) == "caption":
        raise InputError(f"{args.manifest}: a caption manifest has no classes; use `audioclip evaluate query`")
    default_root = f"data/{args.dataset}" if args.dataset in (*FOLDS, *CAPTION_DATASETS) else None
    root = args.root or args.manifest or default_root
    if root is None:
        raise ValueError(f"--root: give the {args.dataset} location (a shard directory or an ImageFolder tree)")
    if args.fold is not None and args.dataset in FOLDS and not 1 <= args.fold <= FOLDS[args.dataset]:
        raise ValueError(f"--fold must be in 1..{FOLDS[args.dataset]} for {args.dataset}, got {args.fold}")
    # a folder's results are named after the tree or manifest, so that two of them do not overwrite each other
    default = f"{args.task}-{Path(root).stem if args.dataset == 'folder' else args.dataset}"
    out = Path(args.out) / (args.name or default) / "results.json"
    check_writable_dir(out.parent, "--out")  # before the model is loaded and the dataset embedded
    _start_distributed()
    is_main = rank_and_world()[0] == 0
    model = _load_model(args)
    data = embed_dataset(
        model,
        args.dataset,
        root,
        folds=[args.fold] if args.fold is not None else None,
        class_names_file=args.class_names,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        progress=is_main,
        manifest=args.manifest,
        clip_seconds=args.clip_seconds,
    )
    folds = data.folds_used if args.dataset in FOLDS else []
    described = {"dataset": args.dataset, "data": data_kind(root), "test_fold": folds[0] if len(folds) == 1 else None,
                 "train_folds": []}  # fmt: skip
    meta = {
        "checkpoint": str(args.checkpoint),
        "fingerprint": fingerprint(model),
        "precision": model.precision,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        # which variant, whether it was trained on this dataset, real or synthetic data (audioclip.models.lineage)
        **result_fields(model.lineage, model.model_name, described),
    }
    if args.task == "zeroshot":
        result = {**zeroshot(model, data, templates, FOLDS.get(args.dataset)), **meta}
        if args.dataset == "folder" and args.fold is not None:
            result["evaluated_on"] = f"fold {args.fold} of {root} only ({len(data)} samples)"
    elif data.task == "caption":
        if args.pair:
            raise ValueError("--pair: caption retrieval always scores text -> audio and audio -> text")
        result = _caption_query(model, data, templates, meta)
    else:
        rows = [query(model, data, q, r, templates) for q, r in pairs or default_pairs(data)]
        result = {
            "task": "query",
            "dataset": args.dataset,
            "root": str(root),
            "templates": templates,
            "num_samples": len(data),
            "evaluated_on": evaluated_on(data, FOLDS.get(args.dataset)),
            "folds": folds,
            "results": rows,
            **meta,
        }
    if is_main:
        write_text(out, json.dumps(result, indent=2) + "\n", "--out")
        _print_result(result)
        print(f"Results: {out}")
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


def _caption_query(model, data, templates: list[str], meta: dict) -> dict:
    """Audio-text retrieval of captioned clips, the standard protocol: every caption a text query whose relevant
    results are the clips it describes, every clip an audio query whose relevant results are its captions (one in a
    caption manifest, five in Clotho and AudioCaps' test split)."""
    from audioclip.evaluation.retrieval import caption_retrieval
    from audioclip.evaluation.zeroshot import class_text_embeddings, evaluated_on

    text = class_text_embeddings(model, data.class_names, templates)
    metrics = caption_retrieval(data.embeddings["audio"], text, data.caption_relevance())
    rows = [
        {"query": query_side, "result": result_side, "num_queries": count,
         **{name: metrics[f"{prefix}_{name}"] for name in ("r@1", "r@5", "r@10", "map@10")}}
        for query_side, result_side, prefix, count in (
            ("text", "audio", "t2a", len(data.class_names)), ("audio", "text", "a2t", len(data))
        )
    ]  # fmt: skip
    return {
        "task": "query",
        "dataset": data.dataset,
        "root": data.root,
        "templates": templates,
        "num_samples": len(data),
        "num_captions": len(data.class_names),
        "evaluated_on": _caption_set(data) if data.dataset in CAPTION_DATASETS else evaluated_on(data, None),
        "left_out": data.left_out,
        "folds": [],
        "results": rows,
        **meta,
    }


def _caption_set(data) -> str:  # noqa: ANN001 - an EmbeddedSet
    """Which clips were scored, in words: AudioCaps figures differ by how many clips could still be downloaded."""
    gone = f"; {len(data.left_out)} clip(s) without audio left out" if data.left_out else ""
    return f"the official test split ({len(data)} clips, {len(data.class_names)} captions{gone})"


def _print_result(result: dict) -> None:
    templates = ", ".join(repr(t) for t in result["templates"])
    if result["task"] == "zeroshot":
        print(f"Zero-shot {result['dataset']} ({len(result['class_names'])} classes, templates {templates}), "
              f"evaluated on {result['evaluated_on']}")  # fmt: skip
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
    print(f"Querying {result['dataset']} (templates {templates}), evaluated on {result['evaluated_on']}")
    if "num_captions" in result:
        print(f"  {'query -> result':<18} {'queries':>8} {'R@1':>7} {'R@5':>7} {'R@10':>7} {'mAP@10':>7}")
        for row in result["results"]:
            scores = " ".join(f"{_percent(row[k]):>7}" for k in ("r@1", "r@5", "r@10", "map@10"))
            print(f"  {row['query'] + ' -> ' + row['result']:<18} {row['num_queries']:>8} {scores}")
        return
    labels = {"p@1": "P@1", "r@1": "R@1", "map": "mAP", "recall@1": "Recall@1", "recall@5": "Recall@5",
              "recall@10": "Recall@10", "map@10": "mAP@10"}  # fmt: skip
    names = list(labels)
    print(f"  {'query -> result':<18} {'queries':>8} " + " ".join(f"{labels[n]:>9}" for n in names))
    for row in result["results"]:
        pair = f"{row['query']} -> {row['result']}"
        print(f"  {pair:<18} {row['num_queries']:>8} " + " ".join(f"{_percent(row[n]):>9}" for n in names))


def _model_args(p: argparse.ArgumentParser, checkpoint_default: str | None = "full") -> None:
    p.add_argument("--checkpoint", default=checkpoint_default, help="official tag (full, partial) or a checkpoint path")
    p.add_argument("--model", default=None, help="registered model name, when it can't be read off the file")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda")
    p.add_argument(
        "--precision", default="auto", help="auto (bf16-mixed where the hardware has bf16), 32-true, bf16-mixed"
    )


def _load_model(args: argparse.Namespace, checkpoint: str | None = None):  # noqa: ANN202 - an AudioCLIP
    """The model `_model_args` describe (`checkpoint` overrides `--checkpoint`), saying its precision when it first
    embeds."""
    from audioclip.inference import load
    from audioclip.precision import announce_on_first_use

    model = load(checkpoint or args.checkpoint, model_name=args.model, device=_device(args.device),
                 precision=args.precision)  # fmt: skip
    announce_on_first_use(model)
    return model


def _evaluate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audioclip evaluate", description="zero-shot classification and querying")
    sub = parser.add_subparsers(dest="task", required=True)
    for task, help_text in (
        ("zeroshot", "zero-shot classification against the class names"),
        ("query", "cross-modal querying: P@1, R@1, mAP (captions: R@1/5/10, mAP@10)"),
    ):
        p = sub.add_parser(task, help=help_text)
        p.add_argument("--dataset", required=True, help=f"one of {', '.join(DATASETS)}")
        p.add_argument(
            "--root", help="dataset root (default data/<dataset>), AudioSet shard dir, ImageFolder or class-folder tree"
        )
        p.add_argument("--manifest", help="folder: a CSV/TSV manifest (path + label | labels | caption)")
        p.add_argument("--clip-seconds", type=float, help="centre crop of every clip in s (folder: 5; Clotho and "
                       "AudioCaps: 10); the other datasets have their own length")  # fmt: skip
        p.add_argument("--fold", type=int, help="evaluate one official fold only (default: every fold)")
        p.add_argument("--template", action="append", help='text template, repeatable (default "{}"); averaged')
        p.add_argument("--templates-file", help="a file of templates, one per line, averaged")
        p.add_argument("--class-names", help="imagefolder: class-name file (one name per line, or folder<TAB>name)")
        p.add_argument("--batch-size", type=int, default=32, help="clips embedded per forward pass (default 32)")
        p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes (default 0)")
        p.add_argument("--out", default="runs/eval", help="results go to OUT/NAME/results.json")
        p.add_argument("--name", help="result name (default: <task>-<dataset>; folder: <task>-<tree or manifest name>)")
        if task == "query":
            p.add_argument("--pair", action="append", help="QUERY:RESULT modalities, repeatable (default: all)")
        _model_args(p)
    _probe_parser(sub)
    return parser


def _probe_parser(sub) -> None:  # noqa: ANN001 - argparse's subparsers action
    p = sub.add_parser("probe", help="linear probe: logistic regression on frozen audio embeddings, per fold")
    p.add_argument("--dataset", required=True, help=f"one of {', '.join(PROBE_DATASETS)}")
    p.add_argument("--root", help="dataset root (default data/<dataset>) or a class-folder tree")
    p.add_argument("--manifest", help="folder: a CSV/TSV manifest (path + label, optional fold)")
    p.add_argument("--clip-seconds", type=float, default=5.0, help="folder: centre crop of every clip (s)")
    p.add_argument("--fold", type=int, help="score one test fold only (default: every fold)")
    p.add_argument("--jobs", type=int, default=None, help="processes for the cross-validation fits (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds made for data without folds")
    p.add_argument("--cache-dir", help="where the frozen embeddings are kept (default OUT/embeddings)")
    p.add_argument("--batch-size", type=int, default=32, help="clips embedded per forward pass (default 32)")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes (default 0)")
    p.add_argument("--out", default="runs/eval", help="results go to OUT/NAME/results.json")
    p.add_argument("--name", help="result name (default: probe-<dataset>; folder: probe-<tree or manifest name>)")
    _model_args(p)


def evaluate(argv: Sequence[str]) -> int:
    args = _evaluate_parser().parse_args(argv)
    return _probe(args) if args.task == "probe" else _evaluate(args)


def _probe(args: argparse.Namespace) -> int:
    """`audioclip evaluate probe`: frozen audio embeddings (cached beside the results), a logistic regression per
    test fold (`audioclip.evaluation.probe`)."""
    import torch.distributed as dist

    from audioclip.data.provenance import data_kind
    from audioclip.evaluation.embedding_cache import cached_embed_dataset
    from audioclip.evaluation.index import fingerprint
    from audioclip.evaluation.probe import linear_probe
    from audioclip.models.lineage import result_fields
    from audioclip.process_group import rank_and_world

    if args.dataset not in PROBE_DATASETS:
        raise ValueError(f"--dataset {args.dataset}: the linear probe runs on {', '.join(PROBE_DATASETS)}")
    if args.manifest is not None and args.dataset != "folder":
        raise ValueError(f"--manifest is for --dataset folder, not {args.dataset}")
    if args.dataset == "folder" and (args.root is None) == (args.manifest is None):
        raise ValueError("--dataset folder: give --root (a class-folder tree) or --manifest (a CSV/TSV file)")
    if args.fold is not None and args.dataset in FOLDS and not 1 <= args.fold <= FOLDS[args.dataset]:
        raise ValueError(f"--fold must be in 1..{FOLDS[args.dataset]} for {args.dataset}, got {args.fold}")
    root = Path(args.root or args.manifest or f"data/{args.dataset}")
    out = Path(args.out) / (args.name or f"probe-{root.stem if args.dataset == 'folder' else args.dataset}")
    check_writable_dir(out, "--out")  # before the model is loaded and the dataset embedded
    cache_dir = Path(args.cache_dir) if args.cache_dir else Path(args.out) / "embeddings"
    check_writable_dir(cache_dir, "--cache-dir")
    _start_distributed()
    is_main = rank_and_world()[0] == 0
    model = _load_model(args)
    model_fingerprint = fingerprint(model)
    data, cache, cached = cached_embed_dataset(
        model, model_fingerprint, cache_dir, args.dataset, root, manifest=args.manifest,
        clip_seconds=args.clip_seconds, write=is_main, batch_size=args.batch_size, num_workers=args.num_workers,
        progress=is_main,
    )  # fmt: skip
    if dist.is_initialized():
        dist.destroy_process_group()  # the classifiers are fitted by one process
    if not is_main:
        return 0
    print(f"Embeddings {'read from' if cached else 'cached in'} {cache}")
    result = linear_probe(data, [args.fold] if args.fold is not None else None, jobs=args.jobs, seed=args.seed)
    described = {"dataset": args.dataset, "data": data_kind(root), "test_fold": args.fold, "train_folds": []}
    result.update(
        checkpoint=str(args.checkpoint), fingerprint=model_fingerprint, precision=model.precision,
        embeddings=str(cache), created=datetime.now(UTC).isoformat(timespec="seconds"),
        **result_fields(model.lineage, model.model_name, described),
    )  # fmt: skip
    write_text(out / "results.json", json.dumps(result, indent=2) + "\n", "--out")
    _print_probe(result)
    print(f"Results: {out / 'results.json'}")
    return 0


def _print_probe(result: dict) -> None:
    print(f"Linear probe {result['dataset']} ({len(result['class_names'])} classes), {result['evaluated_on']}")
    for fold, accuracy in result["fold_accuracy"].items():
        print(f"  fold {fold}: {_percent(accuracy)}  (C = {result['fold_C'][fold]:g})")
    if result["fold_std"] is not None:
        print(f"  mean ± std over folds: {_percent(result['fold_mean'])} ± {_percent(result['fold_std'])}")


def index(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="audioclip index", description="embed a folder of audio and images")
    parser.add_argument(
        "folder", help="folder searched recursively for audio and image files, or a CSV/TSV manifest of audio files"
    )
    parser.add_argument("--out", default="index.pt", help="index file; an existing one is resumed")
    parser.add_argument("--batch-size", type=int, default=16, help="files embedded per forward pass (default 16)")
    parser.add_argument("--window", type=float, help="index audio of any length window by window: seconds (e.g. 5)")
    parser.add_argument("--hop", type=float, help="with --window: seconds between window starts (default: half)")
    _model_args(parser)
    args = parser.parse_args(argv)
    from audioclip.data.stream import window_samples
    from audioclip.evaluation.index import build_index

    if args.window is not None:
        window_samples(args.window, args.window / 2 if args.hop is None else args.hop)
    elif args.hop is not None:
        raise ValueError("--hop: index window by window with --window SECONDS (e.g. --window 5)")

    check_writable_dir(Path(args.out).absolute().parent, "--out")  # before the model is loaded and files embedded
    model = _load_model(args)
    # an absolute path, so that `search` finds the weights from any working directory
    checkpoint = str(Path(args.checkpoint).resolve()) if Path(args.checkpoint).is_file() else str(args.checkpoint)
    stats = build_index(model, args.folder, args.out, checkpoint, batch_size=args.batch_size, window=args.window,
                        hop=args.hop)  # fmt: skip
    held = f"{stats['total']} files, {stats['items']} windows" if args.window else f"{stats['total']} items"
    print(f"{args.out}: {held} ({stats['added']} added, {stats['skipped']} already indexed)")
    if stats["failed"]:
        print(f"skipped {len(stats['failed'])} unreadable file(s), tried again next run:")
        for path, reason in stats["failed"]:
            print(_shown(f"  {reason}" if str(path) in reason else f"  {path}: {reason}"))
    return 0


def search_cli(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="audioclip search", description="nearest items of an index")
    parser.add_argument("index", help="an index file written by `audioclip index`")
    query_group = parser.add_mutually_exclusive_group(required=True)
    query_group.add_argument("--text", help="a text query, e.g. 'dog barking'")
    query_group.add_argument("--audio", help="an audio file")
    query_group.add_argument("--image", help="an image file")
    parser.add_argument("--top", type=int, default=10, help="how many results to print (default 10)")
    parser.add_argument("--modality", choices=["audio", "image"], help="only results of this modality")
    parser.add_argument("--template", default="{}", help="template for --text")
    _model_args(parser, checkpoint_default=None)
    args = parser.parse_args(argv)
    from audioclip.evaluation.index import load_index, search

    idx = load_index(args.index)
    checkpoint = args.checkpoint or idx["checkpoint"]  # the index remembers the weights it was built with
    model = _load_model(args, checkpoint)
    hits = search(idx, model, args.text, args.audio, args.image, args.top, args.modality, args.template)
    for rank, hit in enumerate(hits, start=1):
        where = f"  @ {hit.start:.2f}-{hit.end:.2f} s" if hit.start is not None else ""
        label = f"[{hit.label}]  " if hit.label else ""
        print(_shown(f"{rank:>3}. {hit.score:+.4f}  {hit.modality:<5}  {label}{hit.path}{where}"))
    return 0
