"""`audioclip export RUN_OR_CKPT OUT_DIR`: a trained AudioCLIP as the ecosystem expects it.

    audioclip export runs/finetune-esc50/fold1 exported/esc50-fold1            # a run folder, a checkpoint or a tag
    audioclip export full exported/full --onnx                                 # + ONNX encoders, parity checked
    audioclip export runs/finetune-esc50/fold1 out --push owner/name            # + upload to the Hugging Face Hub

OUT_DIR receives `model.safetensors`, `config.json` and `README.md` (the model card; `audioclip.export.card`), the
run's resolved configuration as `training_config.yaml` when the weights are a run's, and with `--onnx`
`audio_encoder.onnx` / `text_encoder.onnx` (`audioclip.export.onnx`). The folder format and its reading are
`audioclip.models.export_folder`; the weights are read through the one path every command uses
(`models.pretrained.read_weights`), so a run folder exports the checkpoint its test metrics are of.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from audioclip.constants import SAMPLE_RATE
from audioclip.export.card import card_figures, render_card
from audioclip.models import create_model
from audioclip.models.export_folder import (
    CARD_FILE,
    CONFIG_FILE,
    FORMAT,
    FORMAT_VERSION,
    INSTALL_HINT,
    WEIGHTS_FILE,
    parse_hub_source,
    write_weights,
)
from audioclip.models.lineage import weights_lineage
from audioclip.models.pretrained import RUN_CHECKPOINTS, RUN_METRICS, TAGS, WeightsError, load_weights, read_weights
from audioclip.models.registry import guess_model_name
from audioclip.outputs import check_writable_dir, make_dir, write_text

SETTING = "OUT_DIR"
TRAINING_CONFIG = "training_config.yaml"
AUDIO_INPUT = "(batch, channels, samples) float32 at 44.1 kHz in the int16 value range (-32768..32767)"


def run_of(source: str, weights_path: Path) -> tuple[Path | None, dict | None]:
    """The run folder the weights come from and its test record, when the record is of exactly these weights (the
    other checkpoints of a run were not tested, so its figures are not theirs)."""
    given = Path(source).expanduser()
    if given.is_dir() and (given / RUN_METRICS).is_file():
        run = given
    elif weights_path.parent.name == RUN_CHECKPOINTS and (weights_path.parent.parent / RUN_METRICS).is_file():
        run = weights_path.parent.parent
    else:
        return None, None
    record = json.loads((run / RUN_METRICS).read_text())
    tested = Path(str(record.get("checkpoint") or "")).expanduser()
    if not tested.is_file() or tested.resolve() != weights_path.resolve():
        return run, None
    return run, record


def _class_names(given: list[str] | None, record: dict | None) -> list[str] | None:
    names = given if given else (record or {}).get("class_names")
    if names and len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"--class-names: duplicate names ({', '.join(twice)})")
    return list(names) if names else None


def export_model(
    source: str,
    out: str | Path,
    class_names: list[str] | None = None,
    template: str | None = None,
    license: str = "mit",
    onnx: bool = False,
    onnx_seconds: float = 5.0,
) -> dict[str, Any]:
    """Write the export folder of `source` (a tag, a checkpoint, a run folder or another export) into `out`;
    returns its config (also `out/config.json`)."""
    out = check_writable_dir(Path(out), SETTING)  # before any weights are read
    if source in TAGS and TAGS[source].kind != "audioclip":
        raise WeightsError(f"{source!r} holds {TAGS[source].kind} weights, not a whole AudioCLIP: nothing to export")
    weights = read_weights(source)
    name = guess_model_name(weights.state)
    model = create_model(name).eval()
    load_weights(model, weights)
    run, record = run_of(str(source), weights.path)
    config: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": name,  # the registered name (`audioclip.list_models()`); `model_config` says what it is
        "model_config": asdict(model.config),
        "sample_rate": SAMPLE_RATE,
        "embed_dim": model.config.embed_dim,
        "audio_input": AUDIO_INPUT,
        "class_names": _class_names(class_names, record),
        "prompt_template": template or (record or {}).get("template") or "{}",
        "lineage": weights_lineage(str(source), weights.content),
        "source": str(source),
        "license": license,
        "exported_with": metadata.version("audioclip-lightning"),
        "test_metrics": {k: v for k, v in (record or {}).items() if k.startswith("test/")},
    }
    make_dir(out, SETTING)
    config["weights"] = {"file": WEIGHTS_FILE, "sha256": write_weights(model.state_dict(), out, SETTING)}
    if run is not None and (run / "config.yaml").is_file():
        shutil.copyfile(run / "config.yaml", out / TRAINING_CONFIG)
        config["training_config"] = TRAINING_CONFIG
    if onnx:
        from audioclip.export.onnx import export_onnx

        config["onnx"] = export_onnx(model, out, onnx_seconds)
    write_text(out / CONFIG_FILE, json.dumps(config, indent=2) + "\n", SETTING)
    write_text(out / CARD_FILE, render_card(config, run, record, card_figures(run, record)), SETTING)
    return config


def push_folder(folder: Path, repo: str, private: bool = False) -> str:
    """Upload the export folder to the Hugging Face Hub as model repository `repo` (created if needed; the token is
    huggingface_hub's: `hf auth login` or HF_TOKEN); returns the commit URL."""
    repo_id, revision = parse_hub_source(f"hf://{repo}")
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise WeightsError(f"--push needs huggingface_hub: {INSTALL_HINT}") from None
    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision,
                                   commit_message=f"audioclip export ({folder.name})")  # fmt: skip
    except Exception as exc:  # huggingface_hub's HTTP errors, no token, no network: one line naming the repository
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise WeightsError(f"--push {repo}: the upload failed ({type(exc).__name__}: {reason})") from None
    return str(getattr(commit, "commit_url", commit))
