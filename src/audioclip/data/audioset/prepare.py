"""``audioclip prepare audioset STAGE``: the command line over the AudioSet preparation stages.

Segment list -> clips (``download.py`` or ``ingest.py``) -> decoded media (``extract.py``) -> LitData shards
(``pack.py``); ``shard.py`` runs all of them for one shard task, ``distribute.py`` runs many shard tasks here or on
Ray, and ``parts.merge`` makes one training set of their parts. Every stage is resumable (a JSONL manifest per stage,
``manifests.py``), parallel (``--workers``, a process pool) and splittable across machines (``--shard i/n`` keeps
the YTIDs whose crc32 is ``i`` modulo ``n``; each machine writes its own manifest file). This module only parses the
options and dispatches; docs/audioset.md describes the stages and the layout under ``--root``::

    manifests/sources.*.jsonl   download / ingest results: ytid -> media file and the offset of the segment in it
    manifests/extract.*.jsonl   extract results: channels, seconds, frame times or the reason of the failure
    clips/                      downloaded clips, ``{YTID}_{start}.{ext}``
    extracted/{YTID[:2]}/{YTID}/audio.flac, 0.jpg .. 9.jpg
    shards/                     LitData chunks + index.json (``pack``), label_counts.json, class_names.json

References: argparse sub-commands; timm's ``train.py`` over its ``timm/data`` stages.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from audioclip.data.audioset.distribute import DISTRIBUTORS, run_shards
from audioclip.data.audioset.download import DEFAULT_FORMAT, DEFAULT_URL_TEMPLATE, download
from audioclip.data.audioset.extract import extract
from audioclip.data.audioset.ingest import ingest
from audioclip.data.audioset.manifests import manifest_dir, read_manifest
from audioclip.data.audioset.metadata import DEFAULT_LABELS, parse_shard, read_segments
from audioclip.data.audioset.pack import AUDIO_FORMATS, pack
from audioclip.data.audioset.parts import merge
from audioclip.data.audioset.shard import run_shard
from audioclip.data.audioset.youtube import ThrottledError, ytdlp_options
from audioclip.storage import check_writable, is_url, join


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="audioclip prepare audioset",
        description="Prepare AudioSet: download or ingest clips, extract audio + 10 frames, pack LitData shards.",
    )
    stages = parser.add_subparsers(dest="stage", required=True)

    def stage(name: str, help: str) -> argparse.ArgumentParser:
        p = stages.add_parser(name, help=help)
        p.add_argument("--segments", required=True, help="an official segment list, e.g. eval_segments.csv")
        p.add_argument("--root", required=True, help="work directory: manifests, clips, extracted media, shards")
        return p

    def parallel(p: argparse.ArgumentParser) -> None:
        p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
        p.add_argument("--shard", default="0/1", help="i/n: this machine's share of the segments (default 0/1)")
        p.add_argument("--retry-failed", action="store_true", help="redo clips recorded as failed")

    def download_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url-template", default=DEFAULT_URL_TEMPLATE, help="URL of a YTID, with {ytid}")
        p.add_argument("--format", default=DEFAULT_FORMAT, help="yt-dlp format selector")
        p.add_argument("--timeout", type=float, default=300.0, help="seconds per clip before giving up")
        p.add_argument("--cookies", help="yt-dlp --cookies: a Netscape cookies file of a signed-in browser session")
        p.add_argument("--sleep-requests", type=float, help="yt-dlp --sleep-requests: seconds between requests")
        p.add_argument("--sleep-interval", type=float, help="yt-dlp --sleep-interval: seconds before each download")
        p.add_argument("--proxy", help="yt-dlp --proxy URL, e.g. socks5://127.0.0.1:1080")
        p.add_argument("--limit-rate", help="yt-dlp --limit-rate, e.g. 2M (bytes/s)")
        p.add_argument("--ytdlp-args", help="further yt-dlp options, one shell-quoted string")
        p.add_argument("--max-throttled", type=int, default=10, help="stop after this many throttled in a row")
        p.add_argument("--backoff", type=float, default=60.0, help="seconds to wait after a throttled download")

    def pack_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--labels", default=str(DEFAULT_LABELS), help="class_labels_indices.csv (default: bundled)")
        p.add_argument("--out", help="shard directory (default ROOT/shards)")
        p.add_argument("--val-fraction", type=float, default=0.0, help="share of clips for OUT/val (default 0)")
        p.add_argument("--chunk-bytes", default="64MB", help="LitData chunk size")
        p.add_argument(
            "--audio-format",
            choices=AUDIO_FORMATS,
            default="flac",
            help="audio in the shards: flac (small), npy (raw int16: faster streaming, more bytes), npy-mono",
        )
        p.add_argument(
            "--balance-tiers",
            action="store_true",
            help="pack training clips by repeat tier (tier-1, tier-2, ...) for class-balanced sampling",
        )

    p = stage("download", "fetch each segment's time range with yt-dlp")
    parallel(p)
    download_args(p)
    p.add_argument("--full-videos", action="store_true", help="fetch whole videos (no ffmpeg range cut)")
    p = stage("ingest", "use clips you already have: {YTID}_{start}.* or {YTID}.*")
    p.add_argument("--clips", required=True, help="directory of existing clips (searched recursively)")
    p.add_argument("--full-videos", action="store_true", help="files are whole videos, not segments")
    p.add_argument("--shard", default="0/1", help="i/n: this machine's share of the segments (default 0/1)")
    p.add_argument("--retry-failed", action="store_true", help="look again for clips recorded as missing")
    p = stage("extract", "decode audio (44.1 kHz FLAC) and 10 frames (JPEG) per clip")
    parallel(p)
    p = stage("pack", "write the extracted clips into LitData shards")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="LitData writer processes")
    pack_args(p)
    p = stage("all", "ingest (with --clips) or download, then extract, then pack")
    parallel(p)
    download_args(p)
    pack_args(p)
    p.add_argument("--clips", help="ingest this directory instead of downloading")
    p.add_argument("--full-videos", action="store_true", help="sources are whole videos, not segments")
    p.add_argument(
        "--work",
        help="with an object-store --root (s3://, gs://): the local folder for clips and extracted media "
        "(default: one under the system's temporary folder, named after ROOT)",
    )
    p = stage("shard", "one standalone shard task (--shard i/n): fetch -> extract -> pack into OUT/.../parts/i-of-n")
    parallel(p)
    download_args(p)
    pack_args(p)
    p.add_argument("--clips", help="ingest this directory instead of downloading")
    p.add_argument("--full-videos", action="store_true", help="sources are whole videos, not segments")
    p.add_argument("--keep-work", action="store_true", help="keep the clips and extracted media under ROOT")
    p = stage("shards", "run shard tasks 0..N-1 here in turn or on a Ray cluster (--distributor ray), then merge")
    p.add_argument("--num-shards", type=int, required=True, help="N: the number of shard tasks")
    p.add_argument("--distributor", choices=DISTRIBUTORS, default="local", help="local (in turn) or ray")
    p.add_argument("--ray-address", help="a running Ray cluster (e.g. auto); default: start a local Ray")
    p.add_argument("--redo", action="store_true", help="run shards again even when their stats file exists")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (and Ray CPUs) per shard")
    p.add_argument("--retry-failed", action="store_true", help="redo clips recorded as failed (temporary ones)")
    download_args(p)
    pack_args(p)
    p.add_argument("--clips", help="ingest this directory instead of downloading")
    p.add_argument("--full-videos", action="store_true", help="sources are whole videos, not segments")
    p.add_argument("--keep-work", action="store_true", help="keep the clips and extracted media under ROOT")
    p = stages.add_parser("merge", help="make OUT[/train,/val] one LitData dataset over the parts of the shard tasks")
    p.add_argument("--out", required=True, help="the --out of the shard tasks (path or s3:// / gs:// URL)")
    p.add_argument("--allow-missing", action="store_true", help="merge the parts there are, listing the missing")
    return parser


def _download_options(args: argparse.Namespace) -> dict:
    options = ytdlp_options(
        args.cookies, args.sleep_requests, args.sleep_interval, args.proxy, args.limit_rate, args.ytdlp_args
    )
    if args.cookies and not Path(args.cookies).is_file():
        raise FileNotFoundError(f"--cookies {args.cookies}: no such file")
    return {
        "url_template": args.url_template,
        "fmt": args.format,
        "timeout": args.timeout,
        "options": options,
        "max_throttled": args.max_throttled,
        "backoff": args.backoff,
    }


def _shard_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of ``shard.run_shard`` from the ``shard`` or ``shards`` command line."""
    return {
        "clips": args.clips,
        "full_videos": args.full_videos,
        "download_options": _download_options(args),
        "workers": args.workers,
        "retry_failed": args.retry_failed,
        "labels_csv": args.labels,
        "val_fraction": args.val_fraction,
        "chunk_bytes": args.chunk_bytes,
        "audio_format": args.audio_format,
        "balance_tiers": args.balance_tiers,
        "keep_work": getattr(args, "keep_work", False),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``audioclip prepare audioset STAGE ...``; prints one JSON summary line per stage.

    ``argv`` is what follows ``prepare`` (``audioset STAGE ...``, from the ``audioclip`` command) or just
    ``STAGE ...`` (from ``python -m audioclip.data.audioset.prepare``). Exit status 3: YouTube throttled
    ``--max-throttled`` downloads in a row (the message says what to do).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["audioset"]:
        argv = argv[1:]
    parser = _parser()
    args = parser.parse_args(argv)
    if args.stage == "merge":
        if is_url(args.out):
            check_writable(args.out, "--out")
        print(json.dumps({"stage": "merge", **merge(args.out, allow_missing=args.allow_missing)}), flush=True)
        return 0
    if args.stage in ("shard", "shards") and not args.out:
        parser.error(f"{args.stage} needs --out: where the parts go (a path, or an s3:// / gs:// URL)")
    if is_url(args.root) and args.stage != "all":
        parser.error(
            f"--root {args.root}: {args.stage} keeps its work on the local disk; give a local --root (and --out "
            "s3://... for the shards), or use `all`, which takes an object store as --root"
        )
    out = args.out if getattr(args, "out", None) else join(args.root, "shards") if args.stage == "all" else None
    if out is not None and is_url(out):
        # before any clip is fetched: a missing bucket or refused credentials should not wait hours for the upload
        check_writable(out, "--out" if args.out else "--root")
    if args.stage == "shards":
        return _run_shards(args)
    try:
        return _prepare_into_store(args, out) if is_url(args.root) else _run(args)
    except ThrottledError as e:
        print(e, file=sys.stderr)
        return 3


def _prepare_into_store(args: argparse.Namespace, out: str) -> int:
    """``all`` with an object-store ``--root``: one shard task fetches, extracts and packs on the local disk
    (``--work``) and uploads its parts to ``out`` (``ROOT/shards`` unless ``--out``), then ``merge`` makes them one
    dataset per split there, as a cluster's shard tasks and merge job would."""
    work = Path(args.work) if args.work else default_work(args.root)
    shard = parse_shard(args.shard)
    stats = run_shard(read_segments(args.segments), work, out, shard, **_shard_options(args))
    print(json.dumps({"stage": "shard", **stats}), flush=True)
    if shard != (0, 1):
        print(
            f"merge skipped: run `audioclip prepare audioset merge --out {out}` when every shard is done",
            file=sys.stderr,
        )
        return 0
    print(json.dumps({"stage": "merge", **merge(out)}), flush=True)
    return 0


def default_work(root: str) -> Path:
    """The local work folder of ``all`` with an object-store root: stable per ROOT, so a re-run resumes it."""
    return Path(tempfile.gettempdir()) / "audioclip-audioset" / re.sub(r"[^A-Za-z0-9._-]+", "_", root)


def _run(args: argparse.Namespace) -> int:
    """Run the stages of a parsed command line."""
    segments = read_segments(args.segments)
    shard = parse_shard(getattr(args, "shard", "0/1"))
    retry = getattr(args, "retry_failed", False)
    root = Path(args.root)

    def report(stage: str, result: dict) -> None:
        print(json.dumps({"stage": stage, **result}), flush=True)

    started = time.perf_counter()
    if args.stage == "shard":
        stats = run_shard(segments, root, args.out, shard, **_shard_options(args))
        report("shard", stats)
        return 0
    if args.stage in ("ingest", "all") and getattr(args, "clips", None):
        counts = ingest(segments, root, args.clips, full_videos=args.full_videos, shard=shard, retry_failed=retry)
        report("ingest", dict(counts))
    elif args.stage in ("download", "all"):
        counts = download(
            segments,
            root,
            sections=not args.full_videos,
            workers=args.workers,
            shard=shard,
            retry_failed=retry,
            **_download_options(args),
        )
        report("download", dict(counts))
    if args.stage in ("extract", "all"):
        report("extract", dict(extract(segments, root, workers=args.workers, shard=shard, retry_failed=retry)))
    if args.stage == "all" and shard != (0, 1):
        print(
            "pack skipped: it reads every machine's extracted clips, so run `pack` once when all are done",
            file=sys.stderr,
        )
    elif args.stage in ("pack", "all"):
        summary = pack(
            segments,
            root,
            args.out,
            labels_csv=args.labels,
            val_fraction=args.val_fraction,
            workers=args.workers,
            chunk_bytes=args.chunk_bytes,
            audio_format=args.audio_format,
            balance_tiers=args.balance_tiers,
        )
        report("pack", summary)
    failures = sum(1 for r in read_manifest(root, "extract").values() if r["status"] != "ok")
    print(
        f"done in {time.perf_counter() - started:.1f} s; manifests in {manifest_dir(root)} ({failures} extract "
        "failures, each with its reason)",
        file=sys.stderr,
    )
    return 0


def _run_shards(args: argparse.Namespace) -> int:
    """``prepare audioset shards``: run every shard task with the chosen distributor, then merge the parts."""
    result = run_shards(
        args.segments,
        args.root,
        args.out,
        args.num_shards,
        distributor=args.distributor,
        ray_address=args.ray_address,
        cpus_per_shard=args.workers,
        options=_shard_options(args),
        redo=args.redo,
    )
    summary = {"stage": "shards", "done": len(result["done"]), "skipped": len(result["skipped"])}
    summary["failed"] = result["failed"]
    if not result["failed"]:
        summary["merge"] = merge(args.out)
    print(json.dumps(summary), flush=True)
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
