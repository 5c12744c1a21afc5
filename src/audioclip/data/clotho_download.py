"""`audioclip data download clotho` (`make data-clotho`): Clotho v2.1 from its Zenodo record, through the same
mechanism as ESC-50 and UrbanSound8K (`audioclip.data.download`: pooch with the known md5s, resumed transfers,
`AUDIOCLIP_DATA_MIRROR`, one-line errors), into the layout `audioclip.data.captions.read_clotho` reads:

    data/clotho/clotho_captions_{development,validation,evaluation}.csv
    data/clotho/{development,validation,evaluation}/*.wav        (clotho_audio_<split>.7z, unpacked)

Each split is its captions CSV and its audio archive (`audioclip.data.captions.CLOTHO_FILES`, Drossos et al. 2020,
Zenodo record 4783391). The archives are 7z, which neither pooch nor the standard library reads: they are unpacked
with py7zr (the `captions` extra), into a staging folder next to the root that is renamed into place once every
file the CSV lists is there. `.audioclip-download.json` in the root records each file done with its checksum, so a
re-run skips it; `--split test` fetches only the evaluation split that retrieval scores (about 1 GB of the 5 GB).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from audioclip.data.caption_names import CLOTHO_SPLITS
from audioclip.data.captions import CLOTHO_FILES, CLOTHO_RECORD, read_clotho
from audioclip.data.download import MARKER, DatasetArchive, DownloadError, fetch_archive, read_marker

DEFAULT_ROOT = "data/clotho"
SPLITS = ("train", "val", "test")


def _archive(filename: str, md5: str) -> DatasetArchive:
    """One Clotho file as `fetch_archive` takes it (the audio archive's top folder is its split's folder)."""
    return DatasetArchive("clotho", f"Clotho v2.1 {filename}", f"{CLOTHO_RECORD}/files/{filename}?download=1",
                          filename, f"md5:{md5}", "", 0, "data-clotho", DEFAULT_ROOT)  # fmt: skip


def _verified(file: Path, known_hash: str) -> Path:
    import pooch

    algorithm = known_hash.split(":")[0]
    actual = f"{algorithm}:{pooch.file_hash(str(file), alg=algorithm)}"
    if actual != known_hash:
        raise DownloadError(f"{file}: checksum {actual}, expected {known_hash}; nothing was unpacked")
    return file


def _unpack_7z(file: Path, into: Path) -> int:
    """The .wav files of a Clotho audio archive written flat into `into` (the archive's top folder dropped);
    DownloadError for an unreadable archive or a member that would leave the folder."""
    try:
        import py7zr
    except ImportError:
        raise DownloadError(f"{file}: Clotho's audio is 7z, read with py7zr: `make install EXTRAS=captions` "
                            "(or unpack it by hand into the split's folder)") from None  # fmt: skip
    try:
        with py7zr.SevenZipFile(file) as archive:
            names = [n for n in archive.getnames() if n.lower().endswith(".wav")]
            for name in names:
                path = PurePosixPath(name)
                if path.is_absolute() or ".." in path.parts:
                    raise DownloadError(f"{file}: member {name!r} points outside the archive; refusing to unpack it")
            archive.extract(path=into, targets=names)
    except (py7zr.Bad7zFile, EOFError, OSError) as error:
        raise DownloadError(f"{file}: not a readable 7z archive ({error})") from None
    for name in names:  # flat: <split>/x.wav and x.wav alike become into/x.wav
        source = into / name
        if source.parent != into:
            os.replace(source, into / source.name)
    for folder in sorted((p for p in into.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        folder.rmdir()
    return len(names)


def _record(root: Path, filename: str, known_hash: str) -> None:
    done = read_marker(root) or {"dataset": "clotho", "files": {}}
    done.setdefault("files", {})[filename] = known_hash
    (root / MARKER).write_text(json.dumps(done, indent=2) + "\n")


def download_clotho(
    root: str | Path | None = None,
    splits: Sequence[str] = SPLITS,
    archive_files: Sequence[str | Path] = (),
    keep_archive: bool = False,
    retries: int = 3,
    progress: bool = True,
    files: Mapping[str, Sequence[tuple[str, str]]] | None = None,
) -> str:
    """Fetch (or take from `archive_files`, matched by name), verify and unpack the Clotho `splits` into `root`;
    return what is there. `files`: (file name, md5) per split, the official ones by default."""
    root = Path(root or DEFAULT_ROOT)
    files = CLOTHO_FILES if files is None else files
    given = {Path(f).name: Path(f) for f in archive_files}
    for name, path in given.items():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file (ARCHIVE= / --archive)")
    downloads = root.parent / f".{root.name}.download"
    lines = []
    for split in splits:
        official = CLOTHO_SPLITS[split]
        # the captions first: they say which audio files the archive must hold
        for filename, md5 in sorted(files[split], key=lambda f: not f[0].endswith(".csv")):
            known_hash = f"md5:{md5}"
            if (read_marker(root) or {}).get("files", {}).get(filename) == known_hash:
                continue
            archive = _archive(filename, md5)
            if filename in given:
                print(f"Verifying {given[filename]} (md5)", flush=True)
                file = _verified(given[filename], known_hash)
            else:
                file = fetch_archive(archive, downloads, known_hash, retries, progress)
            root.mkdir(parents=True, exist_ok=True)
            if filename.endswith(".csv"):
                shutil.copyfile(file, root / f".{filename}.part")
                os.replace(root / f".{filename}.part", root / filename)
            else:
                staging = root.parent / f".{root.name}.{official}.unpacking"
                shutil.rmtree(staging, ignore_errors=True)  # what a killed run left
                try:
                    staging.mkdir(parents=True)
                    if progress:
                        print(f"Unpacking {file.name}", flush=True)
                    _unpack_7z(file, staging)
                    listed = {c.path.name for c in read_clotho(root, split, audio=staging)}
                    found = {p.name for p in staging.glob("*.wav")}
                    if listed != found:
                        missing = sorted(listed - found)
                        raise DownloadError(f"{file}: holds {len(found):,} .wav files, clotho_captions_{official}.csv "
                                            f"lists {len(listed):,} ({len(missing):,} missing"
                                            f"{', first ' + missing[0] if missing else ''}); nothing was moved "
                                            f"into {root}")  # fmt: skip
                    shutil.rmtree(root / official, ignore_errors=True)
                    os.replace(staging, root / official)
                except BaseException:
                    shutil.rmtree(staging, ignore_errors=True)
                    raise
            _record(root, filename, known_hash)
            if filename not in given and not keep_archive:
                file.unlink()
        clips = read_clotho(root, split)
        lines.append(f"{split} ({official}): {len(clips):,} clips, {5 * len(clips):,} captions")
    if downloads.is_dir() and not any(downloads.iterdir()):
        downloads.rmdir()
    return f"Clotho v2.1 at {root}: " + "; ".join(lines)
