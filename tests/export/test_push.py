"""`audioclip export SOURCE OUT --push owner/name` and `audioclip.load("hf://owner/name")` against a local server that
speaks the Hugging Face Hub's HTTP API (tests/hub_server.py): huggingface_hub itself, unchanged, creates the
repository, asks the pre-upload endpoint, commits the folder as NDJSON, then lists and downloads the snapshot. The
commands run in fresh processes, pointed at the server as a user points them at a Hub: HF_ENDPOINT, HF_TOKEN, HF_HOME.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hub_server import HubServer
from test_export_folder import LOAD_FROM_HUB, _embeddings

import audioclip

ROOT = Path(__file__).resolve().parents[2]
REPO = "me/audioclip-tiny"


@pytest.fixture(scope="module")
def hub():
    with HubServer() as server:
        yield server


def _env(hub: HubServer, home: Path, **settings: str) -> dict[str, str]:
    env = {**hub.env(str(home)), **settings}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))  # this checkout's
    return env


def _export(source: Path, out: Path, env: dict[str, str], *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "audioclip.cli", "export", str(source), str(out), *options],
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip


def _sha256s(files: dict[str, bytes]) -> dict[str, str]:
    return {path: hashlib.sha256(data).hexdigest() for path, data in files.items()}


def _folder(out: Path) -> dict[str, bytes]:
    return {path.relative_to(out).as_posix(): path.read_bytes() for path in out.rglob("*") if path.is_file()}


@pytest.fixture(scope="module")
def pushed(hub, tiny_checkpoint, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The tiny model exported and pushed with huggingface_hub as installed (hf_xet present: the streamed upload)."""
    base = tmp_path_factory.mktemp("push")
    result = _export(tiny_checkpoint, base / "out", _env(hub, base / "hf-home"), "--push", REPO)
    return base / "out", result


def test_push_uploads_exactly_the_export_folder(hub, pushed):
    out, result = pushed
    assert result.returncode == 0, result.stderr
    repo = hub.repos[REPO]
    head = repo.commits[repo.branches["main"]]
    assert f"pushed: {hub.url}/{REPO}/commit/{head.oid}" in result.stdout.splitlines()
    local = _folder(out)
    assert sorted(local) == ["README.md", "config.json", "model.safetensors"]
    assert _sha256s(head.written) == _sha256s(local)  # one commit, of exactly the folder's files, byte for byte
    stored = hub.files(REPO)
    assert stored.pop(".gitattributes") == hub.files(REPO, head.parent)[".gitattributes"]  # the repository's creation
    assert _sha256s(stored) == _sha256s(local)
    assert not repo.private
    writes = [entry for entry in hub.log if entry["method"] == "POST"]
    assert {entry["path"] for entry in writes} >= {"/api/repos/create", f"/api/models/{REPO}/commit/main"}
    assert all(entry["authorization"] == f"Bearer {hub.token}" for entry in writes)
    assert hub.unhandled == []


def test_push_without_hf_xet_and_private(hub, tiny_checkpoint, tmp_path):
    """huggingface_hub without hf_xet takes another path (one create_commit); --private makes the repository private."""
    repo_id = "me/audioclip-tiny-private"
    env = _env(hub, tmp_path / "hf-home", HF_HUB_DISABLE_XET="1")
    result = _export(tiny_checkpoint, tmp_path / "out", env, "--push", repo_id, "--private")
    assert result.returncode == 0, result.stderr
    repo = hub.repos[repo_id]
    assert repo.private and f"pushed: {hub.url}/{repo_id}/commit/{repo.branches['main']}" in result.stdout
    assert _sha256s(repo.commits[repo.branches["main"]].written) == _sha256s(_folder(tmp_path / "out"))
    assert hub.unhandled == []


def test_hf_source_downloads_what_was_pushed(hub, pushed, tmp_path):
    out, result = pushed
    assert result.returncode == 0, result.stderr
    embedded = tmp_path / "emb.pt"
    subprocess.run([sys.executable, "-c", LOAD_FROM_HUB, f"hf://{REPO}", str(embedded)],
                   env=_env(hub, tmp_path / "fresh-hf-home"), check=True, timeout=300)  # fmt: skip
    head = hub.repos[REPO].branches["main"]
    downloaded = {e["path"] for e in hub.log if e["method"] == "GET" and "/resolve/" in e["path"]}
    assert downloaded == {f"/{REPO}/resolve/{head}/{name}" for name in _folder(out)}  # from the server, all of it
    snapshot = tmp_path / "fresh-hf-home" / "hub" / f"models--{REPO.replace('/', '--')}" / "snapshots" / head
    assert _sha256s(_folder(snapshot)) == _sha256s(_folder(out))
    hub_embeddings = torch.load(embedded, weights_only=True)
    local = _embeddings(audioclip.load(out, precision="32-true"))
    assert torch.equal(hub_embeddings["audio"], local[0]) and torch.equal(hub_embeddings["text"], local[1])


@pytest.mark.parametrize("refusal", ["namespace", "token"])
def test_a_refused_push_is_one_line(hub, tiny_checkpoint, tmp_path, refusal):
    repo_id = f"someone-else/refused-{refusal}"
    if refusal == "namespace":
        hub.refuse.add(repo_id)  # 403: this token may not write there
    env = _env(hub, tmp_path / "hf-home", **({"HF_TOKEN": "hf_wrong_token"} if refusal == "token" else {}))  # 401
    result = _export(tiny_checkpoint, tmp_path / "out", env, "--push", repo_id)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"audioclip: error: --push {repo_id}: the upload failed (")
    assert ("403" if refusal == "namespace" else "401") in result.stderr
    assert repo_id not in hub.repos and (tmp_path / "out" / "model.safetensors").is_file()  # the export stays
