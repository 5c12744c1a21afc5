"""`audioclip export`: the folder a user hands on (safetensors + config + model card), loading it back from the folder
and from a Hugging Face cache with the network off, and refusing a tampered file in one line."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import audioclip
from audioclip.cli import main
from audioclip.data.synthetic import write_esc50
from audioclip.export.card import card_figures
from audioclip.export.folder import export_model
from audioclip.models import WeightsError
from audioclip.tasks.cli import run_lightning_cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A real one-epoch fine-tuning run of the tiny AudioCLIP on a tiny synthetic ESC-50 (its test_metrics.json and
    checkpoints written by `audioclip fit`)."""
    base = tmp_path_factory.mktemp("run")
    write_esc50(base / "esc50", clips_per_class=4, classes=4, seed=0)
    run_lightning_cli(["fit", "--config", str(ROOT / "conf/trainer.yaml"), "--config", str(ROOT / "conf/demo.yaml"),
                       "--data.init_args.root", str(base / "esc50"), "--data.init_args.num_workers", "0",
                       "--data.init_args.persistent_workers", "false", "--data.init_args.batch_size", "4",
                       "--trainer.default_root_dir", str(base / "run"), "--trainer.logger.init_args.save_dir",
                       str(base / "run"), "--trainer.logger.init_args.offline", "true",
                       "--trainer.enable_progress_bar", "false", "--trainer.max_epochs", "1"])  # fmt: skip
    return base / "run"


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "esc50-tiny"
    assert main(["export", str(run), str(out)]) == 0
    return out


def _embeddings(model) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(3)
    audio = torch.randn(2, 2, 44100) * 3000
    with torch.no_grad():
        return model.encode_audio(audio), model.encode_text(model.tokenize(["dog", "rain"]))


def test_export_then_load_gives_identical_fp32_embeddings(run, exported):
    assert sorted(p.name for p in exported.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                          "training_config.yaml"]  # fmt: skip
    original = audioclip.load(run, precision="32-true")  # the run folder: the checkpoint its test metrics are of
    again = audioclip.load(exported, precision="32-true")
    for a, b in zip(_embeddings(original), _embeddings(again), strict=True):
        assert torch.equal(a, b)
    assert again.lineage == original.lineage  # the variant and its steps survive the export (the report reads them)
    assert not zipfile_or_pickle(exported / "model.safetensors")


def zipfile_or_pickle(path: Path) -> bool:
    head = path.read_bytes()[:4]
    return head.startswith(b"PK") or head.startswith(b"\x80")


def test_config_says_what_the_model_is_and_what_it_was_tested_on(run, exported):
    config = json.loads((exported / "config.json").read_text())
    record = json.loads((run / "test_metrics.json").read_text())
    assert config["architecture"] == "audioclip-tiny" and config["sample_rate"] == 44100 and config["embed_dim"] == 64
    # the class names the test scored against, in the data's order (the synthetic tree's metadata)
    with open(Path(record["lineage"]["steps"][0]["root"]) / "meta/esc50.csv") as file:
        names = {int(row["target"]): row["category"].replace("_", " ") for row in csv.DictReader(file)}
    assert config["class_names"] == [names[i] for i in sorted(names)]
    assert config["prompt_template"] == "{}"
    assert config["test_metrics"] == {"test/acc": record["test/acc"]}


def test_model_card_numbers_are_the_runs_own(run, exported):
    record = json.loads((run / "test_metrics.json").read_text())
    card = (exported / "README.md").read_text()
    row = next(line for line in card.splitlines() if line.startswith("| ESC-50 audio -> text accuracy"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == f"{100 * record['test/acc']:.2f}"
    assert cells[2] == "—" and cells[3] == "synthetic data"  # synthetic data never stands beside the paper
    assert Path(record["checkpoint"]).name in card and "audioclip fit --config training_config.yaml" in card
    assert card.startswith("---\nlicense: mit\n")  # the Hub's metadata block


def test_a_comparable_run_gets_the_papers_figure_beside_it(tmp_path, shared_dir):
    """The comparability of `make report`: real data, paper-size model, variant full, fine-tuned on ESC-50."""
    with open(shared_dir / "fixtures/paper/tables.csv") as file:
        paper = next(r for r in csv.DictReader(file) if r["model"] == "AudioCLIP full" and r["dataset"] == "ESC-50"
                     and r["trained_on_target"] == "yes" and r["metric"] == "accuracy")  # fmt: skip
    step = {"phase": "FinetuneModule", "dataset": "esc50", "data": "real", "test_fold": 1, "protocol": "honest"}
    record = {"checkpoint": "x.ckpt", "test/acc": 0.9, "variant": "full", "model": "audioclip", "dataset": "esc50",
              "data": "real", "real_lineage": True, "trained_on_target": True, "test_fold": 1, "protocol": "honest",
              "lineage": {"variant": "full", "steps": [step]}, "result": "text"}  # fmt: skip
    (tmp_path / "test_metrics.json").write_text(json.dumps(record))
    figures = card_figures(tmp_path, record)  # the row of Table 2 and its repetition in Table 3
    assert [f["note"] for f in figures] == ["Table 2, AudioCLIP full", "Table 3, AudioCLIP full"]
    assert all(f["ours"] == pytest.approx(90.0) and f["paper"] == float(paper["value_percent"]) for f in figures)
    tiny = {**record, "model": "audioclip-tiny"}
    (tmp_path / "test_metrics.json").write_text(json.dumps(tiny))
    (figure,) = card_figures(tmp_path, tiny)
    assert figure["paper"] is None and "not the paper's size" in figure["note"]


def _hub_cache(folder: Path, cache: Path, repo: str, commit: str = "0" * 40) -> Path:
    """Lay `folder` out as huggingface_hub's cache holds a downloaded model repository (its "Understand caching"
    guide): blobs named by their sha256, a snapshot of symlinks per commit, refs/main naming the commit."""
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / commit
    (repo_dir / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    for path in folder.iterdir():
        blob = repo_dir / "blobs" / audioclip.models.pretrained.sha256sum(path)
        blob.write_bytes(path.read_bytes())
        (snapshot / path.name).symlink_to(os.path.relpath(blob, snapshot))
    return repo_dir


LOAD_FROM_HUB = """
import sys, torch, audioclip
model = audioclip.load(sys.argv[1], precision="32-true")
torch.manual_seed(3)
audio = torch.randn(2, 2, 44100) * 3000
with torch.no_grad():
    torch.save({"audio": model.encode_audio(audio), "text": model.encode_text(model.tokenize(["dog", "rain"]))},
               sys.argv[2])
"""


def _offline_env(cache: Path) -> dict[str, str]:
    # offline, and an endpoint nothing listens on: a download attempt could not succeed either
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_ENDPOINT": "http://127.0.0.1:9"}


def test_hf_source_loads_from_the_hugging_face_cache_with_the_network_off(exported, tmp_path):
    from huggingface_hub import scan_cache_dir

    cache = tmp_path / "hub"
    _hub_cache(exported, cache, "someone/audioclip-esc50")
    (repo,) = scan_cache_dir(cache).repos  # huggingface_hub itself reads the layout as one cached model
    assert repo.repo_id == "someone/audioclip-esc50" and {f.file_name for f in repo.refs["main"].files} >= {
        "model.safetensors", "config.json", "README.md"}  # fmt: skip
    out = tmp_path / "emb.pt"
    subprocess.run([sys.executable, "-c", LOAD_FROM_HUB, "hf://someone/audioclip-esc50", str(out)],
                   env=_offline_env(cache), check=True, timeout=300)  # fmt: skip
    hub = torch.load(out, weights_only=True)
    local = _embeddings(audioclip.load(exported, precision="32-true"))
    assert torch.equal(hub["audio"], local[0]) and torch.equal(hub["text"], local[1])


def test_a_repository_missing_from_the_cache_offline_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "audioclip.cli", "classify", "x.wav", "--labels", "a,b",
                             "--checkpoint", "hf://someone/not-cached"], env=_offline_env(tmp_path / "hub"),
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "hf://someone/not-cached: not found in the Hugging Face cache" in result.stderr
    assert "HF_HUB_OFFLINE" in result.stderr


def _copy(folder: Path, to: Path) -> Path:
    to.mkdir()
    for path in folder.iterdir():
        (to / path.name).write_bytes(path.read_bytes())
    return to


def test_a_tampered_safetensors_file_is_refused_in_one_line(exported, tmp_path, capsys):
    folder = _copy(exported, tmp_path / "tampered")
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x01  # one bit of one weight: loads fine as safetensors, but is not the exported model
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="does not match config.json"):
        audioclip.load(folder)
    assert main(["classify", "x.wav", "--labels", "a,b", "--checkpoint", str(folder)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"audioclip: error: {weights}: sha256")


def test_a_damaged_safetensors_header_is_one_line(exported, tmp_path, capsys):
    folder = _copy(exported, tmp_path / "damaged")
    weights = folder / "model.safetensors"
    weights.write_bytes(b"\xff" * 8 + weights.read_bytes()[8:])  # the header length: far beyond the file
    config = json.loads((folder / "config.json").read_text())
    config["weights"]["sha256"] = audioclip.models.pretrained.sha256sum(weights)  # the checksum passes
    (folder / "config.json").write_text(json.dumps(config))
    assert main(["classify", "x.wav", "--labels", "a,b", "--checkpoint", str(folder)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"{weights}: not a loadable safetensors file" in err


def test_a_tag_that_is_not_a_whole_audioclip_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(WeightsError, match="not a whole AudioCLIP"):
        export_model("esrnxfbsp", tmp_path / "out")
    assert not (tmp_path / "out").exists()
