"""A Hugging Face Hub for tests: the standard library's HTTP server, in a thread, on a free port, speaking the part of
the Hub's HTTP API that huggingface_hub (2.4) calls to create a model repository, commit a folder to it and download
a snapshot of it. The client is pointed at it by its own setting, `HF_ENDPOINT`, read when it is imported: run the
code under test in a subprocess with `HubServer.env`.

    POST      /api/repos/create                        create_repo: 200 {"url"}, 409 when it exists (exist_ok)
    GET       /api/models/{repo}[/revision/{rev}]      repo_info: the commit sha and the files ("siblings")
    GET       /api/models/{repo}/tree/{rev}[/{path}]   list_repo_tree: type, path, size, git blob oid of each entry
    POST      /api/models/{repo}/preupload/{rev}       upload modes: "regular" for every file, so no LFS or Xet
                                                       transfer is ever asked for (and the blob oid already there)
    POST      /api/validate-yaml                       the model card's metadata (create_commit without hf_xet)
    POST      /api/models/{repo}/commit/{rev}          NDJSON: a header line, then file (base64) and deletedFile /
                                                       deletedFolder lines; 200 {"commitUrl", "commitOid"}
    HEAD, GET /{repo}/resolve/{rev}/{path}             the file: ETag (its git blob oid), X-Repo-Commit,
                                                       Content-Length, Accept-Ranges; Range answered with 206

A created repository holds one commit with a `.gitattributes`, as on the Hub. Writes need `Authorization: Bearer
<token>` with the server's token (no token or another one: 401) and a repository not in `refuse` (403, as the Hub
answers a token that may not write to a namespace); reads of a public repository need no token, a wrong one is 401.
Errors carry the Hub's `X-Error-Code` / `X-Error-Message` headers (RepoNotFound, RevisionNotFound, EntryNotFound),
which huggingface_hub turns into its own exceptions. Every request is logged (method, path, Authorization header);
a request no route answers is logged in `unhandled` too, so a test can check the client asked for nothing more.
Not spoken: LFS and Xet storage, pull requests, tags, and anything a real Hub checks about tokens beyond equality.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.onnx filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_oid(data: bytes) -> str:
    """The id git gives the content of a file: sha1 of `blob <size>\\0<content>` (the Hub's ETag of a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    oid: str
    summary: str
    parent: str | None
    files: dict[str, bytes]  # the whole tree after this commit
    written: dict[str, bytes | None]  # what this commit wrote: content, or None for a deletion
    date: str = field(default_factory=lambda: datetime.now(UTC).isoformat().replace("+00:00", "Z"))


@dataclass
class Repo:
    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit oid
    commits: dict[str, Commit] = field(default_factory=dict)

    def commit(self, branch: str, summary: str, written: dict[str, bytes | None]) -> Commit:
        parent = self.branches.get(branch)
        files = dict(self.commits[parent].files) if parent else {}
        for path, data in written.items():
            if data is None:
                files.pop(path, None)
            else:
                files[path] = data
        digest = hashlib.sha1(f"{self.repo_id}\0{parent}\0{summary}\0{len(self.commits)}".encode())
        for path in sorted(files):
            digest.update(f"\0{path}\0{git_blob_oid(files[path])}".encode())
        commit = Commit(digest.hexdigest(), summary, parent, files, dict(written))
        self.commits[commit.oid] = commit
        self.branches[branch] = commit.oid
        return commit

    def resolve(self, revision: str) -> Commit | None:
        oid = self.branches.get(revision, revision)
        return self.commits.get(oid)


class HubError(Exception):
    """An answer with an HTTP error status, in the Hub's way (a JSON body and the X-Error-* headers)."""

    def __init__(self, status: int, message: str, code: str | None = None, commit: str | None = None,
                 **body: str) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.code, self.commit, self.body = status, message, code, commit, body


class HubServer:
    """The server, its repositories (`repos`, by id), its request log, and the settings that point a client at it."""

    def __init__(self, token: str = "hf_test_token") -> None:
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.refuse: set[str] = set()  # repository ids this token may not write to (403)
        self.log: list[dict] = []
        self.unhandled: list[str] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def env(self, hf_home: str, token: str | None = None) -> dict[str, str]:
        """This process's environment as a user pointing huggingface_hub at this Hub has it: its endpoint, a token (the
        server's unless given), a Hugging Face home of its own (cache, stored token), no telemetry, and none of the
        caller's own HF_* settings (HF_HUB_OFFLINE, HF_HUB_CACHE, another token, ...)."""
        own = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE_", "TRANSFORMERS_"))}
        return {**own, "HF_ENDPOINT": self.url, "HF_TOKEN": self.token if token is None else token,
                "HF_HOME": hf_home, "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}  # fmt: skip

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of `repo_id` at `revision` (a branch or a commit id)."""
        return dict(self.repos[repo_id].resolve(revision).files)

    # ------------------------------------------------------------------ the API, one method per endpoint

    def _readable(self, repo_id: str, auth: bool) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not auth):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _writable(self, repo_id: str, auth: bool) -> Repo:
        if not auth:
            raise HubError(401, "Invalid username or password.")
        if repo_id in self.refuse:
            raise HubError(403, f"You don't have the rights to write to {repo_id}")
        return self._readable(repo_id, auth)

    @staticmethod
    def _revision(repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def create_repo(self, body: dict, auth: bool) -> tuple[int, dict]:
        if not auth:
            raise HubError(401, "Invalid username or password.")
        if body.get("type", "model") != "model":
            raise HubError(400, "this test Hub holds model repositories only")
        repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
        if repo_id in self.refuse:
            raise HubError(403, f"You don't have the rights to create a model under the namespace {repo_id}")
        if repo_id in self.repos:
            # huggingface_hub reads the url of the repository that is there from this answer too (exist_ok=True)
            raise HubError(409, "You already created this model repo", url=f"{self.url}/{repo_id}")
        repo = Repo(repo_id, private=body.get("visibility") == "private")
        repo.commit("main", "initial commit", {".gitattributes": GITATTRIBUTES})
        self.repos[repo_id] = repo
        return 200, {"url": f"{self.url}/{repo_id}", "name": repo_id, "id": repo_id}

    def repo_info(self, repo_id: str, revision: str, auth: bool) -> dict:
        repo = self._readable(repo_id, auth)
        commit = self._revision(repo, revision)
        return {"id": repo_id, "_id": repo_id, "modelId": repo_id, "author": repo_id.split("/")[0], "sha": commit.oid,
                "private": repo.private, "disabled": False, "gated": False, "lastModified": commit.date,
                "tags": [], "siblings": [{"rfilename": path} for path in sorted(commit.files)]}  # fmt: skip

    def tree(self, repo_id: str, revision: str, under: str, recursive: bool, auth: bool) -> list[dict]:
        commit = self._revision(self._readable(repo_id, auth), revision)
        prefix = f"{under.strip('/')}/" if under.strip("/") else ""
        entries: dict[str, dict] = {}
        for path, data in sorted(commit.files.items()):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            for depth in range(1, len(parts)):  # the folders on the way
                folder = prefix + "/".join(parts[:depth])
                if recursive or depth == 1:
                    entries.setdefault(folder, {"type": "directory", "path": folder, "oid": "0" * 40, "size": 0})
            if recursive or len(parts) == 1:
                entries[path] = {"type": "file", "path": path, "oid": git_blob_oid(data), "size": len(data)}
        if prefix and not entries:
            raise HubError(404, f"{under} does not exist at {revision}", "EntryNotFound", commit.oid)
        return list(entries.values())

    def preupload(self, repo_id: str, revision: str, body: dict, auth: bool) -> dict:
        commit = self._revision(self._writable(repo_id, auth), revision)
        answers = []
        for entry in body["files"]:
            there = commit.files.get(entry["path"])
            answers.append({"path": entry["path"], "uploadMode": "regular", "shouldIgnore": False,
                            "oid": git_blob_oid(there) if there is not None else None})  # fmt: skip
        return {"files": answers, "commitOid": commit.oid}

    def commit(self, repo_id: str, revision: str, lines: list[dict], auth: bool) -> dict:
        repo = self._writable(repo_id, auth)
        head = self._revision(repo, revision)
        if revision not in repo.branches:
            raise HubError(400, f"{revision} is not a branch: commits go to a branch")
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the first NDJSON line must be the header")
        header = lines[0]["value"]
        if header.get("parentCommit") not in (None, head.oid):
            raise HubError(412, f"parentCommit {header['parentCommit']} is not the head of {revision} ({head.oid})")
        written: dict[str, bytes | None] = {}
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            if key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, f"file {value.get('path')}: encoding must be base64")
                written[value["path"]] = base64.b64decode(value["content"], validate=True)
            elif key == "deletedFile":
                if value["path"] not in head.files:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound", head.oid)
                written[value["path"]] = None
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                written.update({path: None for path in head.files if path.startswith(folder)})
            elif key == "lfsFile":  # preupload never answers "lfs": a client sending one did not listen
                raise HubError(400, f"lfsFile {value.get('path')}: this Hub stores no LFS objects")
            else:
                raise HubError(400, f"unknown commit operation {key!r}")
        commit = repo.commit(revision, header.get("summary", ""), written)
        return {"success": True, "commitOid": commit.oid, "commitUrl": f"{self.url}/{repo_id}/commit/{commit.oid}",
                "hookOutput": ""}  # fmt: skip

    def resolve(self, repo_id: str, revision: str, path: str, auth: bool) -> tuple[Commit, bytes]:
        commit = self._revision(self._readable(repo_id, auth), revision)
        if path not in commit.files:
            raise HubError(404, f"{path} does not exist at {revision}", "EntryNotFound", commit.oid)
        return commit, commit.files[path]


def _handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive as the Hub's clients expect: every answer has a Content-Length

        def log_message(self, *args) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            self._serve("GET")

        def do_HEAD(self) -> None:
            self._serve("HEAD")

        def do_POST(self) -> None:
            self._serve("POST")

        def _body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", ""):
                data = b""
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    data += self.rfile.read(size)
                    self.rfile.readline()
                self.rfile.readline()
                return data
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _authorized(self) -> bool:
            given = self.headers.get("Authorization")
            if given is None:
                return False
            if given != f"Bearer {hub.token}":
                raise HubError(401, "Invalid credentials in Authorization header")
            return True

        def _send(self, status: int, body: bytes, headers: dict[str, str], method: str) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", headers.get("Content-Length", str(len(body))))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, value: object, method: str) -> None:
            self._send(status, json.dumps(value).encode(), {"Content-Type": "application/json"}, method)

        def _serve(self, method: str) -> None:
            url = urlsplit(self.path)
            body = self._body() if method == "POST" else b""  # read first: the connection is kept alive
            hub.log.append({"method": method, "path": url.path, "authorization": self.headers.get("Authorization")})
            parts = [unquote(part) for part in url.path.strip("/").split("/")]
            try:
                with hub.lock:
                    self._route(method, parts, parse_qs(url.query), body)
            except HubError as error:
                headers = {"Content-Type": "application/json", "X-Error-Message": error.message}
                if error.code:
                    headers["X-Error-Code"] = error.code
                if error.commit:
                    headers["X-Repo-Commit"] = error.commit
                self._send(error.status, json.dumps({"error": error.message, **error.body}).encode(), headers, method)

        def _route(self, method: str, parts: list[str], query: dict, body: bytes) -> None:
            auth = self._authorized()
            if method == "POST" and parts == ["api", "repos", "create"]:
                self._json(*hub.create_repo(json.loads(body), auth), method)
            elif method == "POST" and parts == ["api", "validate-yaml"]:
                self._json(200, {"errors": [], "warnings": []}, method)
            elif parts[:2] == ["api", "models"] and len(parts) >= 4:
                repo_id, rest = "/".join(parts[2:4]), parts[4:]
                if method == "GET" and not rest:
                    self._json(200, hub.repo_info(repo_id, "main", auth), method)
                elif method == "GET" and len(rest) == 2 and rest[0] == "revision":
                    self._json(200, hub.repo_info(repo_id, rest[1], auth), method)
                elif method == "GET" and len(rest) >= 2 and rest[0] == "tree":
                    recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
                    self._json(200, hub.tree(repo_id, rest[1], "/".join(rest[2:]), recursive, auth), method)
                elif method == "POST" and len(rest) == 2 and rest[0] == "preupload":
                    self._reject_pull_requests(query)
                    self._json(200, hub.preupload(repo_id, rest[1], json.loads(body), auth), method)
                elif method == "POST" and len(rest) == 2 and rest[0] == "commit":
                    self._reject_pull_requests(query)
                    lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                    self._json(200, hub.commit(repo_id, rest[1], lines, auth), method)
                else:
                    self._unhandled(method)
            elif method in ("GET", "HEAD") and len(parts) >= 5 and parts[2] == "resolve":
                self._file(method, "/".join(parts[:2]), parts[3], "/".join(parts[4:]), auth)
            else:
                self._unhandled(method)

        def _reject_pull_requests(self, query: dict) -> None:
            if query.get("create_pr"):
                raise HubError(400, "this test Hub opens no pull requests")

        def _unhandled(self, method: str) -> None:
            hub.unhandled.append(f"{method} {self.path}")
            raise HubError(404, f"this test Hub does not answer {method} {urlsplit(self.path).path}")

        def _file(self, method: str, repo_id: str, revision: str, path: str, auth: bool) -> None:
            commit, data = hub.resolve(repo_id, revision, path, auth)
            headers = {"ETag": f'"{git_blob_oid(data)}"', "X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes",
                       "Content-Type": "application/octet-stream"}  # fmt: skip
            wanted = self.headers.get("Range")
            if wanted and wanted.startswith("bytes="):
                first, _, last = wanted.removeprefix("bytes=").partition("-")
                start, end = int(first or 0), min(int(last) if last else len(data) - 1, len(data) - 1)
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                self._send(206, data[start : end + 1], headers, method)
            else:
                self._send(200, data, headers, method)

    return Handler
