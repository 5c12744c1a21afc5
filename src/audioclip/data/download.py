"""`audioclip data download esc50|us8k` (`make data-esc50`, `make data-us8k`): the official archive, verified,
unpacked into the layout the DataModules read (data/README.md).

    audioclip data download esc50 [--root data/esc50] [--archive ESC-50-master.zip]
    audioclip data download us8k  [--root data/us8k]  [--archive UrbanSound8K.tar.gz]

Sources: ESC-50 (Piczak 2015) is the GitHub archive of karolpiczak/ESC-50's master branch; UrbanSound8K (Salamon et
al. 2014) the archive of Zenodo record 1203745. Both checksums are the ones soundata's dataset index publishes
(soundata/soundata, `soundata/datasets/esc50.py` and `soundata/datasets/urbansound8k.py`, `REMOTES`); the US8K md5
is also the one listed on the Zenodo record.

Fetching and checksums are pooch's (`pooch.retrieve` with the known hash, its `HTTPDownloader` with a progress
bar). pooch starts every download from its first byte, so `ResumingDownloader` keeps the bytes received in
`<archive>.part` across runs and asks for the rest with an HTTP Range request (a server that answers the whole file
instead is seen in a requests response hook, and the part is started over). One environment variable,
`AUDIOCLIP_DATA_MIRROR`, replaces the official host with a mirror's base URL; proxies come from the standard
`HTTPS_PROXY` / `HTTP_PROXY` (requests reads them).

The archive is unpacked into a temporary folder next to the target, checked (the metadata CSV is there and every
row's audio file, no more and no fewer), marked with `.audioclip-download.json` (the archive's checksum) and then
renamed into place, so the data root is either absent or complete. A re-run finds the marker and does nothing. A
checksum mismatch deletes the downloaded archive (pooch's policy) and leaves nothing under the data folder.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import tarfile
import time
import zipfile
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from tqdm import tqdm

MIRROR_ENV = "AUDIOCLIP_DATA_MIRROR"
MARKER = ".audioclip-download.json"


class DownloadError(ValueError):
    """A dataset that cannot be fetched, verified or unpacked; one line at the `audioclip` command (exit 2)."""


@dataclass(frozen=True)
class DatasetArchive:
    """One dataset's official archive and what unpacking it must give."""

    name: str  # the dataset's name on the command line (audioclip.constants.FOLDS)
    title: str
    url: str
    filename: str
    known_hash: str  # pooch's form, "<algorithm>:<hex digest>"
    inner: str  # the archive's top folder, which becomes the data root
    clips: int  # audio files of the official release, one per metadata row
    make_target: str
    default_root: str


ARCHIVES = {
    "esc50": DatasetArchive(
        "esc50",
        "ESC-50",
        "https://github.com/karolpiczak/ESC-50/archive/master.zip",
        "ESC-50-master.zip",
        "md5:7771e4b9d86d0945acce719c7a59305a",  # soundata/datasets/esc50.py REMOTES["all"]
        "ESC-50-master",
        2000,
        "data-esc50",
        "data/esc50",
    ),
    "us8k": DatasetArchive(
        "us8k",
        "UrbanSound8K",
        "https://zenodo.org/record/1203745/files/UrbanSound8K.tar.gz?download=1",
        "UrbanSound8K.tar.gz",
        "md5:9aa69802bbf37fb986f71ec1483a196e",  # soundata/datasets/urbansound8k.py REMOTES["all"]; Zenodo 1203745
        "UrbanSound8K",
        8732,
        "data-us8k",
        "data/us8k",
    ),
}


def archive_url(archive: DatasetArchive) -> str:
    """The official URL, or the same path on the mirror that `AUDIOCLIP_DATA_MIRROR` names."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if not mirror:
        return archive.url
    official = urlsplit(archive.url)
    path = official.path + (f"?{official.query}" if official.query else "")
    return mirror.rstrip("/") + path


def _by_hand(archive: DatasetArchive, url: str) -> str:
    return (f"download {url} by hand ({archive.known_hash}) and run `make {archive.make_target} ARCHIVE=<that file>` "
            f"(`audioclip data download {archive.name} --archive <that file>`)")  # fmt: skip


def _reason(error: BaseException) -> str:
    """The innermost words of a requests error ("Connection refused"), without urllib3's nested reprs."""
    text = str(error)
    errno_text = re.findall(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if errno_text:
        return errno_text[-1].strip()
    return (text.splitlines() or [type(error).__name__])[0][:200] or type(error).__name__


# ------------------------------------------------------------------------------------------------- the transfer
class _OffsetBar:
    """pooch's progress-bar protocol (total, update, reset, close) over a tqdm bar that starts at the bytes already
    on disk: pooch sees only the rest of the file, the user sees the whole."""

    def __init__(self, bar: tqdm, offset: int) -> None:
        self.bar, self.offset = bar, offset

    @property
    def total(self) -> float | None:
        return self.bar.total

    @total.setter
    def total(self, remaining: int) -> None:
        self.bar.total = self.offset + remaining if remaining else None
        self.bar.refresh()

    def update(self, n: int) -> None:
        self.bar.update(n)

    def reset(self) -> None:  # pooch resets and then fills the bar with the remaining total
        self.bar.reset(total=self.bar.total)
        self.bar.update(self.offset)

    def close(self) -> None:
        self.bar.close()


class ResumingDownloader:
    """A pooch downloader that resumes: the bytes received stay in `part` until the file is whole, and each attempt
    asks only for the rest (`Range: bytes=<have>-`), through pooch's own `HTTPDownloader`.

    An attempt that fails after receiving bytes is retried `retries` times in the same run; a connection that
    cannot be made at all fails at once. What is left in `part` is continued by the next run.
    """

    def __init__(self, part: Path, retries: int = 3, progress: bool = True, timeout: float = 60) -> None:
        self.part, self.retries, self.progress, self.timeout = part, retries, progress, timeout

    def _attempt(self, url: str) -> None:
        import pooch

        have = self.part.stat().st_size if self.part.exists() else 0
        bar = tqdm(total=None, initial=have, unit="B", unit_scale=True, desc=f"Downloading {self.part.stem}",
                   disable=not self.progress, dynamic_ncols=True, delay=0.5)  # fmt: skip
        offset_bar = _OffsetBar(bar, have)
        with open(self.part, "ab") as out:

            def whole_file_instead(response: Any, *args: Any, **kwargs: Any) -> Any:
                # redirects pass through here too; only the final answer decides
                if have and response.status_code == 200:  # the server ignored the range: start over
                    out.seek(0)
                    out.truncate()
                    offset_bar.offset = 0
                    bar.reset()
                return response

            headers = {"Range": f"bytes={have}-"} if have else {}
            fetch = pooch.HTTPDownloader(progressbar=offset_bar if self.progress else False, timeout=self.timeout,
                                         headers=headers, hooks={"response": whole_file_instead},
                                         chunk_size=1 << 16)  # fmt: skip
            try:
                fetch(url, out, None)
            finally:
                bar.close()

    def __call__(self, url: str, output_file: str, pooch_instance: Any) -> None:
        import requests

        for attempt in range(self.retries + 1):
            before = self.part.stat().st_size if self.part.exists() else 0
            try:
                self._attempt(url)
                break
            except requests.HTTPError as error:
                status = error.response.status_code if error.response is not None else None
                if status == 416 and before:  # asked beyond the end: the part is stale, start over
                    self.part.unlink()
                    continue
                raise
            except requests.RequestException:
                received = (self.part.stat().st_size if self.part.exists() else 0) > before
                if not received or attempt == self.retries:
                    raise
                time.sleep(min(2**attempt, 30))
        os.replace(self.part, output_file)  # pooch checks the hash of output_file, then moves it into place


def fetch_archive(archive: DatasetArchive, downloads: Path, known_hash: str, retries: int, progress: bool) -> Path:
    """The verified archive in `downloads` (fetched, or resumed from `<filename>.part`); DownloadError in one line."""
    import pooch
    import requests

    url = archive_url(archive)
    print(f"Fetching {url} ({known_hash})", flush=True)
    pooch.get_logger().setLevel("WARNING")  # its own "Downloading data from ..." line repeats the one above
    downloads.mkdir(parents=True, exist_ok=True)
    part = downloads / f"{archive.filename}.part"
    try:
        path = pooch.retrieve(url, known_hash, fname=archive.filename, path=downloads,
                              downloader=ResumingDownloader(part, retries, progress))  # fmt: skip
    except ValueError as error:  # pooch: the hash did not match; it deleted the file
        actual = re.search(r"but got (\w+)", str(error))
        got = f"{known_hash.split(':')[0]}:{actual.group(1)}" if actual else "another checksum"
        _remove_if_empty(downloads)
        raise DownloadError(f"{url}: the archive's checksum is {got}, expected {known_hash}; the download was "
                            f"deleted and nothing was unpacked (a mirror serving another file, or a changed upstream "
                            f"archive: check it and pass --known-hash only if you trust it)") from None  # fmt: skip
    except requests.HTTPError as error:
        _remove_if_empty(downloads)
        status = error.response.status_code if error.response is not None else "?"
        raise DownloadError(f"{url}: HTTP {status}; {_by_hand(archive, url)}") from None
    except requests.RequestException as error:
        have = part.stat().st_size if part.exists() else 0
        if have:
            raise DownloadError(f"{url}: the transfer stopped after {have:,} bytes ({_reason(error)}); run the same "
                                f"command again to continue from {part}") from None  # fmt: skip
        _remove_if_empty(downloads)
        raise DownloadError(f"cannot download {url} ({_reason(error)}); {_by_hand(archive, url)}") from None
    return Path(path)


def _remove_if_empty(folder: Path) -> None:
    """The downloads folder goes when it holds nothing worth keeping (no bytes of a transfer to continue)."""
    for part in folder.glob("*.part"):
        if part.stat().st_size == 0:
            part.unlink()
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


# ------------------------------------------------------------------------------------------------- unpacking
def _inside(inner: str, name: str) -> str | None:
    """The path of archive member `name` below the top folder `inner`, or None for anything else; DownloadError for
    a path that would leave the target (absolute, or with `..`)."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise DownloadError(f"archive member {name!r} points outside the archive's folder; refusing to unpack it")
    if not path.parts or path.parts[0] != inner or len(path.parts) == 1:
        return None
    return str(PurePosixPath(*path.parts[1:]))


def _unpack_zip(file: Path, inner: str, into: Path, progress: bool) -> int:
    with zipfile.ZipFile(file) as archive:
        members = [(m, rel) for m in archive.infolist() if (rel := _inside(inner, m.filename)) is not None]
        with tqdm(total=sum(m.file_size for m, _ in members), unit="B", unit_scale=True, desc=f"Unpacking {file.name}",
                  disable=not progress, dynamic_ncols=True) as bar:  # fmt: skip
            for member, rel in members:
                target = into / rel
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
                bar.update(member.file_size)
    return len(members)


def _unpack_tar(file: Path, inner: str, into: Path, progress: bool) -> int:
    """Streamed (one pass over the gzip), the bar counting compressed bytes read; tarfile's `data` filter refuses
    links out of the tree, device files and absolute paths."""
    count = 0
    with tqdm(total=file.stat().st_size, unit="B", unit_scale=True, desc=f"Unpacking {file.name}",
              disable=not progress, dynamic_ncols=True) as bar:  # fmt: skip
        with open(file, "rb") as raw, tarfile.open(fileobj=_Counted(raw, bar), mode="r|*") as archive:
            for member in archive:
                rel = _inside(inner, member.name)
                if rel is None:
                    continue
                member.name = rel
                archive.extract(member, into, filter="data")
                count += 1
    return count


class _Counted:
    """A binary reader that moves a progress bar by the bytes read through it."""

    def __init__(self, raw: Any, bar: tqdm) -> None:
        self.raw, self.bar = raw, bar

    def read(self, size: int = -1) -> bytes:
        block = self.raw.read(size)
        self.bar.update(len(block))
        return block


def unpack(file: Path, archive: DatasetArchive, into: Path, progress: bool = True) -> None:
    """Every member below the archive's top folder, written below `into` (the top folder itself dropped)."""
    try:
        if zipfile.is_zipfile(file):
            count = _unpack_zip(file, archive.inner, into, progress)
        else:
            count = _unpack_tar(file, archive.inner, into, progress)
    except (tarfile.TarError, zipfile.BadZipFile, gzip.BadGzipFile, zlib.error, EOFError) as error:
        raise DownloadError(f"{file}: not a readable zip or tar archive ({error})") from None
    except OSError as error:  # the staging folder: a full disk, no permission
        raise DownloadError(f"{into}: cannot unpack {file.name} here ({error.strerror or error})") from None
    if count == 0:
        raise DownloadError(f"{file}: holds nothing under {archive.inner}/, the top folder of the {archive.title} "
                            "archive; is it the right file?")  # fmt: skip


@dataclass(frozen=True)
class Found:
    """What a checked data root holds."""

    clips: int
    classes: int
    folds: int
    metadata: Path

    def describe(self, root: Path, archive: DatasetArchive) -> str:
        official = "" if self.clips == archive.clips else f" (the official release has {archive.clips:,})"
        return (f"{archive.title} at {root}: {self.clips:,} clips{official}, {self.classes} classes, {self.folds} "
                f"folds, metadata {self.metadata}")  # fmt: skip


def check_layout(root: Path, archive: DatasetArchive) -> Found:
    """What `root` holds; DownloadError unless the metadata is there and lists exactly the audio files."""
    from audioclip.data.errors import BadFileError, DatasetNotFoundError
    from audioclip.data.esc50 import ESC50_LAYOUT
    from audioclip.data.us8k import US8K_LAYOUT

    layout = {"esc50": ESC50_LAYOUT, "us8k": US8K_LAYOUT}[archive.name]
    try:
        records = layout.read(root)
    except (DatasetNotFoundError, BadFileError) as error:
        raise DownloadError(f"{archive.title}: {error}") from None
    missing = [r.path for r in records if not r.path.is_file()]
    audio = list((root / "audio").rglob("*.wav")) if (root / "audio").is_dir() else []
    if missing or len(audio) != len(records):
        first = f"; first missing: {missing[0].relative_to(root)}" if missing else ""
        raise DownloadError(f"{archive.title}: the metadata lists {len(records):,} clips and audio/ holds "
                            f"{len(audio):,} .wav files ({len(missing):,} listed ones missing{first})")  # fmt: skip
    return Found(len(records), len({r.target for r in records}), len({r.fold for r in records}), layout.metadata)


# ------------------------------------------------------------------------------------------------- the whole
def read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _existing(root: Path, archive: DatasetArchive, known_hash: str) -> str | None:
    """The message of a root that needs nothing done, None for one that is absent or empty; DownloadError for a root
    holding something else."""
    if not root.exists() or (root.is_dir() and not any(root.iterdir())):
        return None
    marker = read_marker(root)
    if marker is not None and marker.get("hash") == known_hash:
        clips = marker.get("clips", "?")
        return f"{root}: {archive.title} is already here ({marker['hash']}, {clips} clips); nothing to do"
    if marker is not None:
        raise DownloadError(f"{root}: holds {archive.title} from an archive with checksum {marker.get('hash')}, not "
                            f"{known_hash}; move it away to download again")  # fmt: skip
    try:
        found = check_layout(root, archive)
    except DownloadError as error:
        raise DownloadError(f"{root}: exists and is not a complete {archive.title} ({error}); move it away or "
                            "choose another root (DATA= / --root)") from None  # fmt: skip
    return f"{found.describe(root, archive)} (already there, not downloaded by this command); nothing to do"


def download(name: str, root: str | Path | None = None, archive_file: str | Path | None = None,
             known_hash: str | None = None, keep_archive: bool = False, retries: int = 3,
             progress: bool = True) -> str:  # fmt: skip
    """Fetch (or take `archive_file`), verify, unpack and check dataset `name` at `root`; return what was done."""
    import pooch

    archive = ARCHIVES[name]
    root = Path(root or archive.default_root)
    known_hash = known_hash or archive.known_hash
    if done := _existing(root, archive, known_hash):
        return done
    downloads = root.parent / f".{root.name}.download"
    if archive_file is not None:
        file = Path(archive_file)
        if not file.is_file():
            raise FileNotFoundError(f"{file}: no such archive (ARCHIVE= / --archive)")
        print(f"Verifying {file} ({known_hash.split(':')[0]})", flush=True)
        actual = f"{known_hash.split(':')[0]}:{pooch.file_hash(str(file), alg=known_hash.split(':')[0])}"
        if actual != known_hash:
            raise DownloadError(f"{file}: checksum {actual}, expected {known_hash} for {archive.filename}; "
                                "nothing was unpacked")  # fmt: skip
    else:
        file = fetch_archive(archive, downloads, known_hash, retries, progress)
    staging = root.parent / f".{root.name}.unpacking"
    shutil.rmtree(staging, ignore_errors=True)  # what a killed run left
    try:
        staging.mkdir(parents=True)
        unpack(file, archive, staging, progress)
        found = check_layout(staging, archive)
        marker = {"dataset": name, "archive": archive.filename, "url": archive_url(archive), "hash": known_hash,
                  "clips": found.clips, "unpacked": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
        (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        if root.is_dir():
            root.rmdir()  # empty (checked above)
        os.replace(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if archive_file is None and not keep_archive:
        file.unlink()
        _remove_if_empty(downloads)
    return found.describe(root, archive)
