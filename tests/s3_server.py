"""A real S3 endpoint for tests: moto's S3 server on a free local port, reached over HTTP.

The project is pointed at it only through the settings users have: ``AWS_ENDPOINT_URL`` and credentials in the
environment (``S3Server.env``, given to subprocesses as they are and set in the test process by ``use``). Beside it,
``FlakyEndpoint`` is a TCP relay in front of the server that goes away at a chosen request, as an endpoint that
vanishes mid-upload does, while the server behind it keeps what was written, for the test to inspect.
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class S3Server:
    """moto's ThreadedMotoServer on 127.0.0.1, and the settings that point a client at it."""

    def __init__(self) -> None:
        moto_server = pytest.importorskip("moto.server", reason="object-store tests need moto[server]: make install")
        pytest.importorskip("s3fs", reason="the object-store tests need s3fs: make install")
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    @property
    def env(self) -> dict[str, str]:
        """What a user exports to reach this store (moto accepts any key until `require_known_keys`)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "test-key",
            "AWS_SECRET_ACCESS_KEY": "test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def start(self) -> S3Server:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def client(self):  # noqa: ANN201 - a boto3 client
        import boto3

        settings = self.env
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=settings["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=settings["AWS_SECRET_ACCESS_KEY"],
            region_name=settings["AWS_DEFAULT_REGION"],
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def read(self, bucket: str, key: str) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def _auth_after(self, requests: str) -> None:
        # moto's own switch: after this many more requests, only keys that its IAM knows are accepted
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/reset-auth", data=requests.encode(), headers={"Content-Type": "text/plain"}
        )
        with urllib.request.urlopen(request) as answer:
            json.load(answer)

    @contextmanager
    def require_known_keys(self) -> Iterator[None]:
        """Inside the block the server checks credentials, and the test keys are unknown to it."""
        self._auth_after("0")
        try:
            yield
        finally:
            self._auth_after("inf")


@contextmanager
def running_s3() -> Iterator[S3Server]:
    """A started server, its settings in this process's environment, s3fs's cached clients forgotten."""
    server = S3Server().start()
    import s3fs

    saved = {key: os.environ.get(key) for key in server.env}
    os.environ.update(server.env)
    s3fs.S3FileSystem.clear_instance_cache()  # a client made for another endpoint would be reused
    try:
        yield server
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()


class FlakyEndpoint:
    """A TCP relay to ``upstream`` (host, port) that goes away for good at the first request whose request line
    matches ``fail_at``: that request is not passed on, every connection is cut and the port refuses from then on."""

    def __init__(self, upstream: tuple[str, int], fail_at: str) -> None:
        self.upstream, self.fail_at = upstream, re.compile(fail_at.encode())
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.gone = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.gone.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._relay, args=(client, server), daemon=True).start()

    def _relay(self, client: socket.socket, server: socket.socket) -> None:
        try:
            while not self.gone.is_set():
                ready, _, _ = select.select([client, server], [], [], 0.2)
                for source in ready:
                    data = source.recv(65536)
                    if not data:
                        return
                    if source is client and self.fail_at.search(data.split(b"\r\n", 1)[0]):
                        self.go_away()
                        return
                    (server if source is client else client).sendall(data)
        except OSError:
            return
        finally:
            client.close()
            server.close()

    def go_away(self) -> None:
        self.gone.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
