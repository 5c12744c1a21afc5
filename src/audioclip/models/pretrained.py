"""Official weights: a table of tags -> file, URL, checksum; safe loading into the registry's models.

- `AudioCLIP-Full-Training.pt`, `AudioCLIP-Partial-Training.pt`, `ESRNXFBSP.pt`: release v0.1 of the AudioCLIP
  project (state dicts of the reference model; ours has the same layout).
- `RN50.pt`: OpenAI's CLIP RN50 (a TorchScript archive), the image+text initialisation of a fresh AudioCLIP.

Every file is read with `torch.load(..., weights_only=True)` (a TorchScript archive with `torch.jit.load` on CPU,
then converted to a state dict), so a pickle that tries to execute code is refused. Loading is strict: a mismatch
is an error listing the missing and unexpected keys (the reference silently loaded with `strict=False`).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import urllib.request
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from clip.clip import _MODELS as clip_models
from torch import nn

import audioclip.memory as memory
from audioclip.models.export_folder import (
    HF_PREFIX,
    SAFETENSORS_SUFFIX,
    hub_folder,
    is_export_folder,
    read_export,
    verified_weights,
)
from audioclip.models.unloadable import unloadable_reason
from audioclip.models.weight_files import WeightsError, sha256sum

_RELEASE = "https://github.com/AndreyGuzhov/AudioCLIP/releases/download/v0.1"
# OpenAI publishes each CLIP file under its sha256; the `clip` package holds the table
_CLIP_RN50_URL = clip_models["RN50"]


@dataclass(frozen=True)
class WeightTag:
    filename: str
    url: str
    kind: str  # "audioclip" (whole model), "clip" (image + text heads), "audio" (ESResNeXt-fbsp, 527 classes)
    sha256: str | None = None  # None: not published; the file's digest is shown when it is loaded
    size: int | None = None


TAGS: dict[str, WeightTag] = {
    "full": WeightTag(
        "AudioCLIP-Full-Training.pt",
        f"{_RELEASE}/AudioCLIP-Full-Training.pt",
        "audioclip",
        "2441d35b353352c8b1bbfb8f7c687f46314c3d2909e940eaf763b8c17f632c44",
        537_302_068,
    ),
    "partial": WeightTag("AudioCLIP-Partial-Training.pt", f"{_RELEASE}/AudioCLIP-Partial-Training.pt", "audioclip"),
    "esrnxfbsp": WeightTag("ESRNXFBSP.pt", f"{_RELEASE}/ESRNXFBSP.pt", "audio"),
    "clip-rn50": WeightTag(
        "RN50.pt",
        _CLIP_RN50_URL,
        "clip",
        _CLIP_RN50_URL.split("/")[-2],
    ),
}


def cache_dir() -> Path:
    return Path(os.environ.get("AUDIOCLIP_CACHE", Path.home() / ".cache" / "audioclip"))


def verify(path: Path, tag: WeightTag) -> None:
    """Refuse a file whose checksum does not match its tag, naming the expected and actual sha256."""
    if tag.sha256 is None:
        return
    actual = sha256sum(path)
    if actual != tag.sha256:
        raise WeightsError(f"{path}: sha256 {actual} does not match {tag.filename} (expected {tag.sha256})")


def resolve(tag_or_path: str | Path) -> tuple[Path, WeightTag | None]:
    """A tag (looked up in the cache, verified), `hf://owner/name[@revision]` (the Hugging Face Hub through its
    cache), an exported folder (`audioclip export`: its `model.safetensors`, checksum verified), a run folder (the
    checkpoint it was tested with) or a file -> (file, tag or None)."""
    if isinstance(tag_or_path, str) and tag_or_path in TAGS:
        tag = TAGS[tag_or_path]
        path = cache_dir() / tag.filename
        if not path.is_file():
            raise WeightsError(
                f"weights {tag_or_path!r} not found at {path}: run `make weights` (or `audioclip weights download "
                f"{tag_or_path}`), or download {tag.url} by hand into {path.parent}"
            )
        verify(path, tag)
        return path, tag
    if isinstance(tag_or_path, str) and tag_or_path.startswith(HF_PREFIX):
        return verified_weights(hub_folder(tag_or_path)), None
    path = Path(tag_or_path).expanduser()
    if is_export_folder(path):
        return verified_weights(path), None
    if path.suffix == SAFETENSORS_SUFFIX and is_export_folder(path.parent):
        return verified_weights(path.parent), None
    if path.is_dir():
        path = run_checkpoint(path)
    if not path.is_file():
        known = ", ".join(TAGS)
        raise WeightsError(f"weights {str(tag_or_path)!r}: no such file, and not a known tag ({known})")
    tag = next((t for t in TAGS.values() if t.filename == path.name), None)
    if tag is not None:
        verify(path, tag)
    return path, tag


# a training run's folder (`runs/<phase>/<run>`): its checkpoints, and the metrics file naming the tested one
RUN_CHECKPOINTS, RUN_METRICS = "checkpoints", "test_metrics.json"


def run_checkpoint(folder: Path) -> Path:
    """The weights a run folder ended with: the checkpoint its test metrics are of (the one selected on validation),
    else its newest `best-*.ckpt`, else its `last.ckpt`; WeightsError naming the folder when it holds none."""
    import json

    try:
        tested = json.loads((folder / RUN_METRICS).read_text()).get("checkpoint")
    except (OSError, ValueError, AttributeError):
        tested = None
    if tested and Path(tested).is_file():
        return Path(tested)
    checkpoints = folder / RUN_CHECKPOINTS
    best = sorted(checkpoints.glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime)
    if best:
        return best[-1]
    if (checkpoints / "last.ckpt").is_file():
        return checkpoints / "last.ckpt"
    raise WeightsError(f"{folder}: a folder, but no run's weights in it (no {RUN_METRICS}, no {checkpoints}/*.ckpt)")


def download(name: str, force: bool = False) -> Path:
    """Fetch a tagged file into the cache and verify it; offline, say where to put it by hand."""
    tag = TAGS[name]
    path = cache_dir() / tag.filename
    if path.is_file() and not force:
        verify(path, tag)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".part")
    try:
        from tqdm import tqdm

        with urllib.request.urlopen(tag.url, timeout=30) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or tag.size
            with tqdm(total=total, unit="B", unit_scale=True, desc=tag.filename) as bar:
                while block := response.read(1 << 20):
                    out.write(block)
                    bar.update(len(block))
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise WeightsError(f"cannot download {tag.url} ({exc}); download it by hand and place it at {path}") from exc
    verify(partial, tag)
    shutil.move(partial, path)
    return path


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


class UnloadableFileError(WeightsError):
    """A file that is not a loadable weight file or checkpoint, or that the safety policy refuses."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"{path}: not a loadable weight file: {reason}; expected a state dict, a Lightning checkpoint or a "
            "TorchScript archive"
        )
        self.path, self.reason = path, reason


# Classes a checkpoint of this project may hold besides tensors and plain containers: a DataModule built in Python
# may keep its root as a Path in the saved hyper-parameters. Nothing else is unpickled.
SAFE_GLOBALS = [pathlib.PosixPath]


def safe_loading():
    """The one safety policy of every weight and checkpoint read (`weights_only=True` plus `SAFE_GLOBALS`)."""
    return torch.serialization.safe_globals(SAFE_GLOBALS)


def read_checkpoint(path: str | Path) -> Mapping[str, Any]:
    """The whole content of a weight file or checkpoint, read once and safely: `init_from`, `--ckpt_path`,
    `audioclip.load` and the evaluation all read through here.

    A `.safetensors` file (an `audioclip export` folder's) holds no pickle: its tensors come back as `state_dict`
    and the folder's `config.json` beside them (`models.export_folder.read_export`).

    A zip-format file is memory-mapped, so reading a checkpoint's small records (the W&B run id, the lineage) does
    not read its tensors; a TorchScript archive (CLIP's `RN50.pt`) is loaded with `torch.jit.load` on CPU and
    returned as `{"state_dict": ...}`. A missing file raises FileNotFoundError; anything else that fails is an
    `UnloadableFileError` naming the file.
    """
    path = Path(path)
    if path.suffix == SAFETENSORS_SUFFIX:
        return read_export(path)
    try:
        if _is_torchscript(path):
            return {"state_dict": torch.jit.load(str(path), map_location="cpu").state_dict()}
        with safe_loading():
            return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        raise UnloadableFileError(path, unloadable_reason(path, exc)) from exc


def state_dict_of(content: Any, path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of what `read_checkpoint` returned, keys without DDP's `module.` or a LightningModule's `model.`."""
    if isinstance(content, Mapping) and "state_dict" in content and isinstance(content["state_dict"], Mapping):
        content = content["state_dict"]  # a Lightning checkpoint: the LightningModule's parameters
    if not isinstance(content, Mapping):
        raise WeightsError(f"{path}: expected a state dict, found {type(content).__name__}")
    return normalize_keys({k: v for k, v in content.items() if isinstance(v, torch.Tensor)})


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weight file safely: a state dict, a Lightning checkpoint or a TorchScript archive."""
    return state_dict_of(read_checkpoint(path), path)


@dataclass(frozen=True)
class Weights:
    """A weight file read once: what the user named, where it lies, its official tag, its whole content (the lineage
    and the run records are read from it) and its tensors."""

    source: str
    path: Path
    tag: WeightTag | None
    content: Mapping[str, Any]
    state: dict[str, torch.Tensor]


def read_weights(source: str | Path) -> Weights:
    """The one way weights are read: an official tag or a file is resolved (checksum verified), read safely
    (`read_checkpoint`) and its tensors taken out (`state_dict_of`). `audioclip.load`, `create_model(pretrained=)`
    and a training phase's `init_from` all come through here."""
    path, tag = resolve(source)
    content = read_checkpoint(path)
    return Weights(str(source), path, tag, content, state_dict_of(content, path))


def load_weights(
    model: nn.Module, source: str | Path | Weights, strict: bool = True, fresh: tuple[str, ...] = ()
) -> Weights:
    """Read `source` (unless it was read already) and load it into `model` (see `load_state`); returns what was read."""
    weights = source if isinstance(source, Weights) else read_weights(source)
    load_state(model, weights.state, str(weights.path), strict, fresh)
    return weights


def _strip(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def normalize_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip DDP's `module.` and a LightningModule's `model.` prefixes."""
    return _strip(_strip(state, "module."), "model.")


def load_into(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str,
    ignore: tuple[str, ...] = (),
    page_out: bool = False,
) -> None:
    """`load_state_dict(strict=True)` for the keys not starting with an `ignore` prefix, with a clear error.

    `page_out`: copy one tensor at a time and give the pages each was read from back at once (`memory.page_out`), so
    a file read through mmap is never resident whole beside the model (`audioclip.load`, `make bench-long`)."""
    own = module.state_dict()
    expected = {k for k in own if not k.startswith(ignore)}
    given = {k for k in state if not k.startswith(ignore)}
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    wrong = sorted(k for k in expected & given if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            more = " ..." if len(unexpected) > 8 else ""
            parts.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:8])}{more}")
        if wrong:
            parts.append(
                f"shape mismatch ({len(wrong)}): "
                + ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong[:8])
            )
        raise WeightsError(f"{source} does not fit {type(module).__name__}: " + "; ".join(parts))
    if not page_out:
        module.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
        return
    targets = module.state_dict(keep_vars=True)  # the parameters and buffers themselves (no load hooks here)
    with torch.no_grad():
        for key in expected:
            targets[key].copy_(state[key])
            memory.page_out(state[key])


# what OpenAI's TorchScript CLIP archives hold beside the weights (sizes as tensors); no model has them as keys
JIT_EXTRAS = ("input_resolution", "context_length", "vocab_size")


def load_state(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str,
    strict: bool = True,
    fresh: tuple[str, ...] = (),
) -> nn.Module:
    """Load a state dict (`state_dict_of`) read from `source` into `model`.

    What a file holds is read off its keys: a whole AudioCLIP, CLIP's image+text heads (into AudioCLIP, the
    audio head and its logit scales untouched), or an ESResNeXt-fbsp (into the standalone model, or into
    AudioCLIP's audio head without its classifier `fc`, which AudioCLIP replaces by the embedding projection).
    With `strict=False` keys that do not fit are skipped instead of raising. Keys starting with a `fresh` prefix
    (e.g. `fc.` for a standalone classifier of another size) keep the model's initialisation; every other key
    still loads strictly.
    """
    from audioclip.models.audioclip import AudioCLIP

    state = {k: v for k, v in state.items() if k not in JIT_EXTRAS}
    is_clip_model = isinstance(model, AudioCLIP)
    has_audio_head = any(k.startswith("audio.") for k in state)
    has_clip = any(k.startswith("visual.") for k in state)

    if not strict:
        own = model.state_dict()
        fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(fitting, strict=False)
        return model
    if not is_clip_model and (has_clip or has_audio_head):
        raise WeightsError(
            f"{source} holds {'a whole AudioCLIP' if has_audio_head else 'CLIP image and text heads'}, but "
            f"{type(model).__name__} is the standalone audio head: start it from audio-head weights (esrnxfbsp, or a "
            "pretrain-audio run)"
        )
    if is_clip_model and has_clip and not has_audio_head:
        load_into(model, state, source, ignore=("audio.", "logit_scale_ai", "logit_scale_at"))
    elif is_clip_model and not has_clip and "fbsp.m" in state:
        load_into(model.audio, state, source, ignore=("fc.",))
    else:
        load_into(model, state, source, ignore=fresh)
    return model
