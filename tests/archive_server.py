"""A real HTTP server for download tests (the standard library's, in a thread, on a free port): files by URL path,
Range requests answered with 206, a log of every request (path, Range header, bytes sent), and two faults a real
network has: a connection lost half way (`cut_once`) and a server that ignores Range (`ignore_range`)."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class ArchiveServer:
    """`files` by URL path; answers Range requests with 206; `cut_once` paths lose the connection half way the
    first time; `ignore_range` answers every request with the whole file, as some servers do."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut_once: set[str] = set()
        self.ignore_range = False
        self.log: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                path = self.path
                data = server.files.get(path)
                entry = {"path": path, "range": self.headers.get("Range"), "sent": 0}
                server.log.append(entry)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if entry["range"] and not server.ignore_range:
                    start = int(entry["range"].removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                body = data[start:]
                if path in server.cut_once:
                    server.cut_once.discard(path)
                    body = body[: len(body) // 2]
                    self.wfile.write(body)
                    self.wfile.flush()
                    entry["sent"] = len(body)
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(body)
                entry["sent"] = len(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def serve(self, url: str, data: bytes) -> None:
        """Serve `data` at the path (and query) of `url`: an official URL, reached through the mirror setting."""
        parts = urlsplit(url)
        self.files[parts.path + (f"?{parts.query}" if parts.query else "")] = data
