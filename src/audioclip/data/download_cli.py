"""`audioclip data download esc50|us8k|clotho` (`make data-esc50`, `make data-us8k`, `make data-clotho`): the
command line over `audioclip.data.download` (one archive: ESC-50, UrbanSound8K) and `audioclip.data.clotho_download`
(a CSV and a 7z per split)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from audioclip.data.download import ARCHIVES, download


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audioclip data", description="datasets into their layouts")
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("download", help="fetch, verify and unpack ESC-50, UrbanSound8K or Clotho")
    p.add_argument("dataset", choices=[*ARCHIVES, "clotho"], help="esc50 (ESC-50), us8k (UrbanSound8K), clotho")
    p.add_argument("--root", help="where the dataset goes (default data/esc50, data/us8k, data/clotho)")
    p.add_argument("--archive", action="append", help="an archive you already have (ESC-50-master.zip, "
                   "UrbanSound8K.tar.gz; Clotho: each of its files, the option repeated)")  # fmt: skip
    p.add_argument(
        "--split",
        action="append",
        choices=["train", "val", "test"],
        help="Clotho: only these splits (repeat; default all three; test = the evaluation split)",
    )
    p.add_argument("--known-hash", help="expect this checksum instead, e.g. md5:... (a changed upstream archive)")
    p.add_argument("--keep-archive", action="store_true", help="keep the downloaded archive next to the root")
    p.add_argument("--retries", type=int, default=3, help="resume an interrupted transfer this often (default 3)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.dataset == "clotho":
        from audioclip.data.clotho_download import SPLITS, download_clotho  # py7zr only when Clotho is asked for

        if args.known_hash:
            raise ValueError("--known-hash: Clotho's files are checked against the md5s of its Zenodo record")
        print(download_clotho(args.root, args.split or SPLITS, args.archive or (), args.keep_archive, args.retries,
                              not args.no_progress))  # fmt: skip
        return 0
    if args.split:
        raise ValueError(f"--split: {args.dataset} is one archive; splits are Clotho's")
    if args.archive and len(args.archive) > 1:
        raise ValueError(f"--archive: {args.dataset} is one archive, got {len(args.archive)}")
    print(download(args.dataset, args.root, (args.archive or [None])[0], args.known_hash, args.keep_archive,
                   args.retries, not args.no_progress))  # fmt: skip
    return 0
