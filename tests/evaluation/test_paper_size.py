"""End to end on the paper-size AudioCLIP with deterministic weights (shared/tools/detweights.py, seed 0): zero-shot,
querying, the report, index and search all run on a handful of clips."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest
import torch

from audioclip.cli import main
from audioclip.data.synthetic import write_esc50
from audioclip.models import create_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, shared_dir):
    spec = importlib.util.spec_from_file_location("detweights", shared_dir / "tools" / "detweights.py")
    detweights = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(detweights)
    model = create_model("audioclip")
    path = tmp_path_factory.mktemp("paper") / "audioclip-det0.pt"
    torch.save(detweights.fill_state_dict(model.state_dict(), seed=0), path)
    return path


def test_paper_size_model_evaluates_reports_indexes_and_searches(checkpoint, tmp_path, shared_dir, capsys):
    esc50 = write_esc50(tmp_path / "esc50", clips_per_class=1, classes=3, progress=False)  # 3 clips, all in fold 1
    runs = tmp_path / "runs"
    common = ["--dataset", "esc50", "--root", str(esc50), "--fold", "1", "--checkpoint", str(checkpoint),
              "--out", str(runs / "eval"), "--batch-size", "3"]  # fmt: skip
    assert main(["evaluate", "zeroshot", *common]) == 0
    assert main(["evaluate", "query", *common]) == 0
    zeroshot = json.loads((runs / "eval" / "zeroshot-esc50" / "results.json").read_text())
    assert zeroshot["model"] == "audioclip" and zeroshot["num_samples"] == 3 and 0 <= zeroshot["accuracy"] <= 1
    assert "fold 1 of 5 only (3 samples)" in capsys.readouterr().out
    query = json.loads((runs / "eval" / "query-esc50" / "results.json").read_text())["results"][0]
    assert query["num_queries"] == 3 and query["r@1"] == query["p@1"]  # one relevant clip per class

    assert main(["report", "--runs", str(runs), "--no-wandb"]) == 0
    # a checkpoint of the user's own (deterministic weights) is no paper variant: listed under "Other runs"
    others = (runs / "REPORT.md").read_text().split("## Other runs")[1]
    assert any(line.startswith("| ESC-50 |") and "zero-shot" in line for line in others.splitlines())

    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(shared_dir / "fixtures/audio/cat_3-95694-A-5.wav", media)
    shutil.copy(shared_dir / "fixtures/images/cat_1.jpg", media)
    index = tmp_path / "index.pt"
    assert main(["index", str(media), "--out", str(index), "--checkpoint", str(checkpoint)]) == 0
    capsys.readouterr()
    assert main(["search", str(index), "--audio", str(media / "cat_3-95694-A-5.wav"), "--top", "2"]) == 0
    first = capsys.readouterr().out.splitlines()[0].split()
    assert first[-1].endswith("cat_3-95694-A-5.wav") and float(first[1]) == pytest.approx(1.0, abs=1e-4)
