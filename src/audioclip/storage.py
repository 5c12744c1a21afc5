"""Where runs and datasets live: a local path, or an object-store URL (``s3://``, ``gs://``, any fsspec location).

One door for the places that may be remote: the AudioSet parts and their merge (``data/audioset/parts.py``) and a
training run's folder (checkpoints, ``test_metrics.json``: ``tasks/checkpoints.py``, ``tasks/callbacks.py``). An
object store is reached only through the settings its users already have: the endpoint from ``AWS_ENDPOINT_URL``
(botocore, and so s3fs and LitData's boto3 client, read it: MinIO, Ceph, moto), the credentials from the environment
or ``~/.aws``, or fsspec ``storage_options``. Its failures become one line naming the location and the setting to
check (``StorageError``, a ValueError, which ``audioclip`` prints and exits 2 on): a bucket that does not exist,
credentials it refuses, an endpoint that does not answer.

URLs never go through ``pathlib``: ``Path("s3://b/x")`` is the local folder ``./s3:/b/x``.

References: fsspec ``core.url_to_fs``; s3fs's error translation (HTTP 403 -> PermissionError, NoSuchBucket ->
FileNotFoundError); botocore's ``AWS_ENDPOINT_URL`` setting; docs/cluster.md.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from audioclip.outputs import check_writable_dir
from audioclip.outputs import write_text as write_local_text


class StorageError(ValueError):
    """A location that cannot be read or written, in one line: where, why, and what to check."""


# botocore and aiohttp name their network failures so; matched by name, so that no object-store client is imported
_UNREACHABLE = {
    "EndpointConnectionError",
    "ConnectionClosedError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ClientConnectorError",
    "ServerDisconnectedError",
}


def is_url(location: str | Path) -> bool:
    """True for ``scheme://...`` locations (object stores, ``file://``, ``memory://``), False for plain paths."""
    return "://" in str(location)


def join(base: str | Path, *names: str) -> str | Path:
    """``base/name/...``: a URL stays a string joined with ``/``; a local path stays a ``Path``."""
    if is_url(base):
        return "/".join([str(base).rstrip("/"), *names])
    return Path(base).joinpath(*names)


def _endpoint() -> str:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "the default endpoint"


def explain(location: str | Path, error: BaseException) -> str | None:
    """One line for an object store's failure at ``location``, or None when ``error`` is not one of them."""
    text = " ".join(str(error).split()) or type(error).__name__
    names = {cls.__name__ for cls in type(error).__mro__}
    if names & _UNREACHABLE or isinstance(error, ConnectionError):
        return f"{location}: the object store does not answer at {_endpoint()} ({text}); check AWS_ENDPOINT_URL"
    if isinstance(error, PermissionError):
        return (
            f"{location}: access denied ({text}); check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE) and the bucket's policy"
        )
    if isinstance(error, FileNotFoundError) and "bucket" in text.lower():
        bucket = str(location).split("://", 1)[-1].split("/", 1)[0]
        return f"{location}: the bucket {bucket!r} does not exist ({text}); create it or correct the URL"
    return None


@contextmanager
def storage_errors(location: str | Path) -> Iterator[None]:
    """Turn an object store's failure inside the block into a ``StorageError`` naming ``location``."""
    try:
        yield
    except StorageError:
        raise
    except Exception as error:
        line = explain(location, error) if is_url(location) else None
        if line is None:
            raise
        raise StorageError(line) from None


def _is_lost_connection(record: logging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    return error is not None and (
        isinstance(error, ConnectionError) or bool({cls.__name__ for cls in type(error).__mro__} & _UNREACHABLE)
    )


class _QuietLostConnections(logging.Filter):
    """When the endpoint goes away, s3fs's concurrent part uploads on its event loop die with it; the operation that
    awaited them says so in one line (``storage_errors``), while asyncio would print each orphaned upload's traceback
    ("Task exception was never retrieved") whenever it is collected. Those records, and only those, are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _is_lost_connection(record)


_QUIET = _QuietLostConnections()


def filesystem(url: str | Path) -> tuple[Any, str]:
    """The fsspec file system of ``url`` and the path inside it."""
    import fsspec

    if _QUIET not in logging.getLogger("asyncio").filters:
        logging.getLogger("asyncio").addFilter(_QUIET)

    try:
        return fsspec.core.url_to_fs(str(url))
    except (ImportError, ValueError) as e:  # e.g. s3:// without s3fs installed
        raise StorageError(
            f"{url}: cannot open this location ({e}); `pip install s3fs` / `gcsfs` for s3:// / gs://"
        ) from None


def exists(location: str | Path) -> bool:
    if not is_url(location):
        return Path(location).exists()
    with storage_errors(location):
        fs, path = filesystem(location)
        return fs.exists(path)


def read_bytes(location: str | Path) -> bytes | None:
    """The content of the file at ``location``, or None when there is none."""
    if not is_url(location):
        path = Path(location)
        return path.read_bytes() if path.is_file() else None
    with storage_errors(location):
        fs, path = filesystem(location)
        if not fs.exists(path):
            return None
        with fs.open(path, "rb") as f:
            return f.read()


def write_bytes(location: str | Path, data: bytes) -> None:
    """Write ``data`` to ``location``; an object store replaces the whole object or nothing."""
    if not is_url(location):
        Path(location).parent.mkdir(parents=True, exist_ok=True)
        Path(location).write_bytes(data)
        return
    with storage_errors(location):
        fs, path = filesystem(location)
        with fs.open(path, "wb") as f:
            f.write(data)


def write_text(location: str | Path, text: str, setting: str) -> None:
    """``text`` into ``location``: a local file atomically (``outputs.write_text``), an object in one put."""
    if is_url(location):
        write_bytes(location, text.encode())
    else:
        write_local_text(location, text, setting)


def append_text(location: str | Path, text: str) -> None:
    """Add ``text`` at the end of ``location``; an object store has no append, so the object is written again."""
    if not is_url(location):
        Path(location).parent.mkdir(parents=True, exist_ok=True)
        with open(location, "a") as file:
            file.write(text)
        return
    write_bytes(location, (read_bytes(location) or b"") + text.encode())


def glob(location: str | Path, pattern: str) -> list[str | Path]:
    """The files under ``location`` matching ``pattern`` (one level), sorted; URLs keep their scheme."""
    if not is_url(location):
        return sorted(Path(location).glob(pattern)) if Path(location).is_dir() else []
    with storage_errors(location):
        fs, path = filesystem(location)
        scheme = str(location).split("://", 1)[0]
        return sorted(f"{scheme}://{found}" for found in fs.glob(f"{path.rstrip('/')}/{pattern}"))


def check_writable(location: str | Path, setting: str) -> None:
    """StorageError (or OutputError for a local folder) unless ``location`` can be written, checked before any long
    work: an object store gets a small probe object, written and removed at once."""
    if not is_url(location):
        check_writable_dir(location, setting)
        return
    probe = join(location, f".audioclip-write-test-{uuid.uuid4().hex}")
    with storage_errors(location):
        fs, path = filesystem(probe)
        with fs.open(path, "wb") as f:
            f.write(b"")
        fs.rm(path)
