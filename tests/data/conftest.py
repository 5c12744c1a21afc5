"""Fixtures of the data tests."""

from __future__ import annotations

import pytest
from archive_server import ArchiveServer

from audioclip.data.download import MIRROR_ENV


@pytest.fixture
def server(monkeypatch):
    archive_server = ArchiveServer()
    archive_server.thread.start()
    monkeypatch.setenv(MIRROR_ENV, archive_server.url)
    yield archive_server
    archive_server.httpd.shutdown()
    archive_server.httpd.server_close()
