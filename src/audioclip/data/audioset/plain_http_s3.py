"""Streaming ``s3://`` shards from an S3-compatible store served over plain HTTP (MinIO, Ceph, a lab's gateway).

LitData (0.2.76) fetches S3 chunks through obstore, whose HTTP client refuses ``http://`` endpoints unless it is told
``allow_http``, which LitData never sets: with ``AWS_ENDPOINT_URL=http://...`` every chunk read fails ("HTTP error:
builder error", ``BadScheme``) although the index, read through boto3, loads. When the endpoint the environment names
(``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``: botocore's own settings) is a plain-HTTP URL, ``s3://`` datasets
are read through boto3 instead, which takes the endpoint, credentials and retries from the same settings as every
other AWS tool; HTTPS endpoints and AWS itself keep LitData's downloader. The switch goes through LitData's public
``register_downloader`` and happens when this module is imported, in the training process and in every loader
worker (a spawned or forkserver worker imports it again when it unpickles the dataset).

References: LitData ``litdata.streaming.downloader.Downloader`` / ``register_downloader``; Apache arrow-rs
``object_store`` ``ClientOptions::with_allow_http``; botocore's ``AWS_ENDPOINT_URL`` setting.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlparse

from litdata.streaming.downloader import Downloader, register_downloader


def plain_http_endpoint() -> str | None:
    """The S3 endpoint the environment names, when it is a plain-HTTP URL; else None."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    return endpoint if endpoint.lower().startswith("http://") else None


class Boto3S3Downloader(Downloader):
    """``s3://`` chunks and index files through one boto3 client per process, written to a temporary name and
    renamed into LitData's cache, so a reader never sees half a chunk."""

    def __init__(
        self,
        remote_dir: str,
        cache_dir: str,
        chunks: list[dict[str, Any]],
        storage_options: dict | None = None,
        **_: Any,
    ) -> None:
        super().__init__(remote_dir, cache_dir, chunks, storage_options)
        self._s3: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_s3"] = None  # a client holds sockets: each process makes its own
        return state

    def _client(self) -> Any:
        if self._s3 is None:
            import boto3

            self._s3 = boto3.session.Session().client("s3", **self._storage_options)
        return self._s3

    def download_file(self, remote_filepath: str, local_filepath: str) -> None:
        if os.path.exists(local_filepath):
            return
        where = urlparse(remote_filepath)
        os.makedirs(os.path.dirname(local_filepath) or ".", exist_ok=True)
        partial = f"{local_filepath}.tmp.{os.getpid()}"
        try:
            self._client().download_file(where.netloc, where.path.lstrip("/"), partial)
            os.replace(partial, local_filepath)
        finally:
            if os.path.exists(partial):
                os.remove(partial)


def use_boto3_for_plain_http() -> bool:
    """Read ``s3://`` through boto3 when the endpoint is plain HTTP; True when it switched."""
    if plain_http_endpoint() is None:
        return False
    register_downloader("s3://", Boto3S3Downloader, overwrite=True)
    return True


use_boto3_for_plain_http()
