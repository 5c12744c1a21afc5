"""`audioclip captions`: fetch AudioCaps' audio through the AudioSet downloader, check a Clotho or AudioCaps tree.

    audioclip captions fetch audiocaps --root data/audiocaps [--split test ...] [--clips MY_COPY] [--workers 4]
    audioclip captions check clotho|audiocaps [--root data/<dataset>] [--split test ...]

The datasets and their layouts: `audioclip.data.captions`. Nothing heavy is imported before the arguments are parsed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from audioclip.data.caption_names import CLOTHO_SPLITS, DATASETS, SPLITS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audioclip captions", description="Clotho and AudioCaps, for caption "
                                     "retrieval and fine-tuning (docs/evaluation.md)")  # fmt: skip
    sub = parser.add_subparsers(dest="action", required=True)
    fetch = sub.add_parser("fetch", help="fetch AudioCaps audio through the AudioSet downloader (or ingest a copy)")
    fetch.add_argument("dataset", choices=["audiocaps"], help="Clotho: `make data-clotho`")
    fetch.add_argument("--root", default="data/audiocaps", help="dataset root (default data/audiocaps)")
    fetch.add_argument("--split", action="append", choices=SPLITS, help="repeatable (default: test)")
    fetch.add_argument("--clips", help="ingest the clips of a copy you have ({youtube_id}_{start}.* files) instead")
    fetch.add_argument("--workers", type=int, default=4, help="parallel downloads (default 4)")
    check = sub.add_parser("check", help="read a dataset's layout and count its clips, captions and missing audio")
    check.add_argument("dataset", choices=DATASETS)
    check.add_argument("--root", help="dataset root (default data/<dataset>)")
    check.add_argument("--split", action="append", choices=SPLITS, help="repeatable (default: all three)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from audioclip.data.captions import CLOTHO_RECORD, clotho_downloads, fetch_audiocaps, read_audiocaps, read_clotho

    if args.action == "fetch":
        for split in args.split or ["test"]:
            counts = fetch_audiocaps(args.root, split, clips=args.clips, workers=args.workers)
            print(f"AudioCaps {split}: {counts['with_audio']} of {counts['clips']} clips have audio in {args.root}")
        return 0
    root = Path(args.root or f"data/{args.dataset}")
    for split in args.split or SPLITS:
        if args.dataset == "clotho":
            if not (root / CLOTHO_SPLITS[split]).is_dir():
                files = ", ".join(f"{name} (md5 {md5})" for name, _, md5 in clotho_downloads(split))
                print(f"Clotho {split}: not here; `make data-clotho SPLITS={split} DATA={root}` downloads it ({files} "
                      f"from {CLOTHO_RECORD})")  # fmt: skip
                continue
            clips, missing = read_clotho(root, split), []
        else:
            clips, missing = read_audiocaps(root, split)
        captions = sum(len(clip.captions) for clip in clips)
        absent = len(missing) + sum(not clip.path.is_file() for clip in clips)
        print(f"{args.dataset} {split}: {len(clips) + len(missing)} clips, {captions} captions, {absent} without audio")
    return 0
