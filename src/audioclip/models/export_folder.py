"""An exported model folder (`audioclip export`) and the Hugging Face Hub: where `audioclip.load(OUT_DIR)` and
`audioclip.load("hf://owner/name")` find their weights.

The folder holds `model.safetensors` (the weights as plain tensors, no pickle: the safetensors format of Hugging
Face), `config.json` (the registered architecture, sample rate, embedding size, class names and prompt template,
the weights' lineage and the sha256 of `model.safetensors`) and `README.md`, the model card. That is the layout the
Hub expects of a model repository (huggingface_hub's "Upload files" and "Model Cards" guides), so the folder is
uploaded as it is, and `hf://` reads it from huggingface_hub's cache (`models--owner--name/snapshots/<commit>/`),
downloading it first unless `HF_HUB_OFFLINE=1`.

The checksum in `config.json` is verified on every load: a `model.safetensors` changed after export (a tampered or
damaged copy) is refused in one line, as is a file whose safetensors header is not valid.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from audioclip.models.weight_files import WeightsError, sha256sum
from audioclip.outputs import write_with

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
SAFETENSORS_SUFFIX = ".safetensors"
FORMAT = "audioclip-export"
FORMAT_VERSION = 1
# the content `models.pretrained.read_checkpoint` returns for a safetensors file keeps the folder's config under
# this key (`models.lineage.recorded_lineage` reads the lineage from it)
EXPORT_KEY = "audioclip_export"
HF_PREFIX = "hf://"
HUB_FILES = (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE)
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
INSTALL_HINT = "install the export extra: make install EXTRAS=export (or pip install 'audioclip-lightning[export]')"


def is_export_folder(path: Path) -> bool:
    """A folder `audioclip export` wrote (its config and its weights side by side)."""
    return path.is_dir() and (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def read_config(folder: Path) -> dict[str, Any]:
    """The folder's `config.json`, or a WeightsError naming it when it is not an export's."""
    path = folder / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise WeightsError(f"{path}: not an audioclip export (no \"format\": \"{FORMAT}\"); write one with "
                           "`audioclip export`")  # fmt: skip
    return config


def export_folder_of(source: str | Path) -> Path:
    """The export folder `source` names: `hf://owner/name[@revision]` (from the Hub's cache) or a local folder."""
    if isinstance(source, str) and source.startswith(HF_PREFIX):
        return hub_folder(source)
    folder = Path(source).expanduser()
    if not is_export_folder(folder):
        raise WeightsError(f"{source}: not an `audioclip export` folder ({CONFIG_FILE} + {WEIGHTS_FILE}), nor hf://")
    return folder


def verified_weights(folder: Path) -> Path:
    """The folder's `model.safetensors` after checking its sha256 against `config.json`."""
    config = read_config(folder)
    path = folder / WEIGHTS_FILE
    expected = str(config.get("weights", {}).get("sha256", ""))
    if not path.is_file():
        raise WeightsError(f"{folder}: no {WEIGHTS_FILE} beside {CONFIG_FILE}")
    actual = sha256sum(path)
    if actual != expected:
        raise WeightsError(
            f"{path}: sha256 {actual} does not match {CONFIG_FILE} ({expected or 'none recorded'}): the file was "
            "changed or damaged after export; export it again or download it again"
        )
    return path


def _safetensors():  # noqa: ANN202 - the safetensors.torch module
    try:
        import safetensors.torch
    except ImportError:
        raise WeightsError(f"safetensors files need the safetensors package: {INSTALL_HINT}") from None
    return safetensors.torch


def read_export(path: Path) -> dict[str, Any]:
    """`{"state_dict": tensors, EXPORT_KEY: config}` of a safetensors file (config: `config.json` beside it, or
    empty); a file safetensors cannot read (a bad header, cut short) is one WeightsError line naming it."""
    load_file = _safetensors().load_file
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises SafetensorError, OSError or ValueError for a bad file
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise WeightsError(f"{path}: not a loadable safetensors file ({reason})") from None
    config = read_config(path.parent) if (path.parent / CONFIG_FILE).is_file() else {}
    return {"state_dict": tensors, EXPORT_KEY: config}


def write_weights(state: Mapping[str, Any], folder: Path, setting: str) -> str:
    """Write `state` as the folder's `model.safetensors` (aside, then renamed: no partial file on a full disk; an
    unwritable folder is an OutputError naming `setting`) and return its sha256."""
    save = _safetensors().save
    path = folder / WEIGHTS_FILE
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in state.items()}
    write_with(path, setting, lambda file: file.write(save(tensors, metadata={"format": "pt"})))
    return sha256sum(path)


def parse_hub_source(source: str) -> tuple[str, str | None]:
    """`hf://owner/name[@revision]` -> (repo id, revision or None)."""
    repo, _, revision = source[len(HF_PREFIX) :].partition("@")
    if not _REPO_ID.fullmatch(repo):
        raise WeightsError(f"{source!r}: write hf://owner/name (or hf://owner/name@revision)")
    return repo, revision or None


def hub_folder(source: str) -> Path:
    """The local folder of `hf://owner/name[@revision]`: huggingface_hub's cached snapshot, downloaded first when it
    is not there and the Hub may be reached (`HF_HUB_OFFLINE=1` reads the cache only)."""
    repo, revision = parse_hub_source(source)
    try:
        from huggingface_hub import constants, snapshot_download
    except ImportError:
        raise WeightsError(f"{source}: hf:// needs huggingface_hub: {INSTALL_HINT}") from None
    try:
        folder = snapshot_download(repo, revision=revision, allow_patterns=[*HUB_FILES, "*.onnx"])
    except Exception as exc:  # huggingface_hub raises its own errors, requests' and OSError: all mean "not here"
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        offline = " (HF_HUB_OFFLINE is set: only the cache is read)" if constants.HF_HUB_OFFLINE else ""
        raise WeightsError(
            f"{source}: not found in the Hugging Face cache {constants.HF_HUB_CACHE}{offline} nor on the Hub "
            f"({type(exc).__name__}: {reason})"
        ) from None
    folder = Path(folder)
    if not is_export_folder(folder):
        raise WeightsError(f"{source}: the repository holds no {CONFIG_FILE} + {WEIGHTS_FILE} of `audioclip export`")
    return folder
