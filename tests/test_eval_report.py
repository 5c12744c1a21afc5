"""`make report` (issue 6, items 3 and 4): the latest results under runs/ in tables shaped like the paper's, with the
paper's figures beside ours, the gap, and PNG plots embedded and logged to W&B."""

from __future__ import annotations

import json
import re

import pytest
import torch

import audioclip
from audioclip.cli import main
from audioclip.data.synthetic import write_esc50
from audioclip.tasks.crossval import write_tables


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A runs/ tree: zero-shot and querying results of the tiny model, a 2-fold cross-validation, and a demo run."""
    base = tmp_path_factory.mktemp("report")
    torch.manual_seed(0)
    checkpoint = base / "tiny.pt"
    torch.save(audioclip.create_model("audioclip-tiny").state_dict(), checkpoint)
    esc50 = write_esc50(base / "esc50", clips_per_class=5, classes=3, progress=False)
    runs = base / "runs"
    for task in ("zeroshot", "query"):
        assert main(["evaluate", task, "--dataset", "esc50", "--root", str(esc50), "--checkpoint", str(checkpoint),
                     "--out", str(runs / "eval")]) == 0  # fmt: skip
    phase = runs / "finetune-esc50"
    for fold, acc in ((1, 0.9), (2, 0.8)):
        (phase / f"fold{fold}").mkdir(parents=True)
        (phase / f"fold{fold}" / "test_metrics.json").write_text(json.dumps({"test/acc": acc, "checkpoint": "x"}))
    write_tables(phase, [(1, 0.9), (2, 0.8)])
    (runs / "demo" / "fold1").mkdir(parents=True)
    (runs / "demo" / "fold1" / "test_metrics.json").write_text(
        json.dumps({"checkpoint": "/r/best-epoch1.ckpt", "test/acc": 0.75})
    )
    return runs


def test_report_has_the_papers_tables_with_our_numbers_the_papers_and_the_gap(runs, capsys):
    assert main(["report", "--runs", str(runs), "--no-wandb"]) == 0
    report = (runs / "REPORT.md").read_text()
    zeroshot = json.loads((runs / "eval" / "zeroshot-esc50" / "results.json").read_text())["accuracy"]
    row = next(line for line in report.splitlines() if line.startswith("| ESC-50 | zero-shot |"))
    assert f"| {100 * zeroshot:.2f} | 69.40 | {100 * (zeroshot - 0.694):+.2f} |" in row
    assert "every fold (all 5 official folds" in row
    assert "| ESC-50 | fine-tuned | 85.00 ± 7.07 | 97.15 | -12.15 | 2 fold(s)" in report
    assert "| UrbanSound8K | zero-shot | n/a | 68.78 | n/a | not run" in report
    for heading in ("Table 2", "Table 3: AudioSet mAP", "Table 4: querying", "Cross-validation: ESC-50"):
        assert heading in report
    assert re.search(r"\| ESC-50 \| text → audio \| [\d.]+ \| [\d.]+ \| [\d.]+ \| n/a \|", report)
    assert "| `" + str(runs / "demo" / "fold1") + "` | test/acc 75.00 | `best-epoch1.ckpt` |" in report


def test_report_embeds_png_plots_that_exist(runs):
    main(["report", "--runs", str(runs), "--no-wandb"])
    report = (runs / "REPORT.md").read_text()
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", report)
    assert sorted(p.rsplit("/", 1)[-1] for p in links) == [
        "query-esc50-pr.png",
        "zeroshot-esc50-confusion.png",
        "zeroshot-esc50-per-class.png",
    ]
    for link in links:
        assert (runs / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_logs_tables_and_plots_to_wandb_offline(runs, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    assert main(["report", "--runs", str(runs)]) == 0
    run_dirs = list((runs / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1
    media = run_dirs[0] / "files" / "media"
    tables = sorted(p.name.split("_")[0] for p in (media / "table" / "report").glob("*.table.json"))
    assert tables == ["other", "table2", "table3", "table4"]
    images = sorted(p.name.rsplit("_", 2)[0] for p in (media / "images" / "report").glob("*.png"))
    assert images == ["query-esc50-pr", "zeroshot-esc50-confusion", "zeroshot-esc50-per-class"]


def test_report_without_runs_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", "--runs", str(tmp_path / "nothing")]) == 2
    assert "no runs directory" in capsys.readouterr().err
