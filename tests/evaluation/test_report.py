"""`make report`: every row of the paper's Tables 1-4, our figure beside it only when it is
comparable (real data, paper-size model, same variant, dataset, setting and metric), everything else under "Other
runs"; REPORT.json holds the rows and REPORT.md is rendered from it; PNG plots embedded and logged to W&B."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch
from wandb_offline import wandb_records

import audioclip
from audioclip.cli import main
from audioclip.data.synthetic import write_esc50
from audioclip.tasks.cli import run_lightning_cli

ROOT = Path(__file__).resolve().parents[2]


def _fold_metrics(group: Path, variant: str, accs: list[float], result: str = "text", data: str = "real",
                  protocol: str = "reference") -> None:  # fmt: skip
    """test_metrics.json of fine-tuning runs on real ESC-50, as `audioclip fit` writes them."""
    for fold, acc in enumerate(accs, start=1):
        (group / f"fold{fold}").mkdir(parents=True)
        record = {"checkpoint": f"{group}/fold{fold}/checkpoints/best.ckpt", "test/acc": acc, "variant": variant,
                  "model": "esresnext-fbsp" if result == "labels" else "audioclip", "dataset": "esc50", "data": data,
                  "real_lineage": data == "real", "trained_on_target": True, "test_fold": fold,
                  "train_folds": [k for k in range(1, 6) if k != fold], "protocol": protocol,
                  "result": result}  # fmt: skip
        (group / f"fold{fold}" / "test_metrics.json").write_text(json.dumps(record))


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    """Fine-tuned partial and full AudioCLIP and the audio head on real ESC-50, a zero-shot partial on real US8K,
    and a full model fine-tuned on synthetic data."""
    runs = tmp_path_factory.mktemp("real") / "runs"
    _fold_metrics(runs / "finetune-esc50-partial", "partial", [0.96, 0.97, 0.95, 0.98, 0.96])
    _fold_metrics(runs / "finetune-esc50-full", "full", [0.98, 0.97, 0.97, 0.99, 0.96])
    _fold_metrics(runs / "finetune-esc50-audio-head", "audio-head", [0.95, 0.96, 0.94, 0.97, 0.96], result="labels")
    _fold_metrics(runs / "finetune-esc50-synthetic", "full", [1.0, 1.0], data="synthetic", protocol="honest")
    zeroshot = {"task": "zeroshot", "dataset": "us8k", "root": "data/us8k", "evaluated_on": "every fold",
                "accuracy": 0.6612, "checkpoint": "partial", "variant": "partial", "model": "audioclip",
                "data": "real", "real_lineage": True, "trained_on_target": False, "protocol": "zero-shot",
                "created": "2026-11-26T00:00:00+00:00"}  # fmt: skip
    (runs / "eval" / "zeroshot-us8k").mkdir(parents=True)
    (runs / "eval" / "zeroshot-us8k" / "results.json").write_text(json.dumps(zeroshot))
    scores = {"query": "text", "result": "audio", "p@1": 0.5, "r@1": 0.02, "map": 0.78, "recall@5": 0.9,
              "pr_curve": {"recall": [0.0, 1.0], "precision": [1.0, 0.5]}}
    querying = {**zeroshot, "task": "query", "dataset": "esc50", "checkpoint": "full", "variant": "full",
                "results": [scores]}  # fmt: skip
    (runs / "eval" / "query-esc50").mkdir(parents=True)
    (runs / "eval" / "query-esc50" / "results.json").write_text(json.dumps(querying))
    assert main(["report", "--runs", str(runs), "--no-wandb"]) == 0
    return runs, json.loads((runs / "REPORT.json").read_text())["rows"]


def _find(rows, **key):
    return [r for r in rows if all(r[k] == v for k, v in key.items())]


def test_every_paper_row_is_in_the_report_once_or_once_per_comparable_run(real_runs):
    _, rows = real_runs
    with open(ROOT / "../shared/fixtures/paper/tables.csv") as file:
        paper = list(csv.DictReader(file))
    for row in paper:
        on_target = {"yes": True, "no": False}.get(row["trained_on_target"])
        match = _find(rows, table=int(row["table"]), dataset=row["dataset"], query=row["query"],
                      result=row["result"], model=row["model"], metric=row["metric"],
                      trained_on_target=on_target)  # fmt: skip
        assert match and all(r["paper"] == float(row["value_percent"]) for r in match), row
    assert {r["table"] for r in rows} == {1, 2, 3, 4, None}


def test_real_partial_and_full_figures_stand_beside_their_own_paper_figures(real_runs):
    runs, rows = real_runs
    (partial,) = _find(rows, table=2, dataset="ESC-50", model="AudioCLIP partial", trained_on_target=True)
    (full,) = _find(rows, table=2, dataset="ESC-50", model="AudioCLIP full", trained_on_target=True)
    assert (partial["paper"], partial["ours"], partial["comparable"]) == (96.65, 96.4, True)
    assert (full["paper"], full["ours"], full["comparable"]) == (97.15, 97.4, True)
    assert partial["protocol"] == full["protocol"] == "reference"
    (zeroshot,) = _find(rows, table=2, dataset="UrbanSound8K", model="AudioCLIP partial", trained_on_target=False)
    assert (zeroshot["paper"], zeroshot["ours"], zeroshot["protocol"]) == (65.31, 66.12, "zero-shot")
    (not_run,) = _find(rows, table=2, dataset="UrbanSound8K", model="AudioCLIP full", trained_on_target=False)
    assert not_run["ours"] is None and not not_run["comparable"] and not_run["note"] == "not run"
    for table, model in ((1, "ESResNeXt-fbsp (30 epochs AudioSet; audio head)"),
                         (3, "Audio-Head (ESResNeXt-fbsp, AudioCLIP paper's training)")):  # fmt: skip
        (head,) = _find(rows, table=table, dataset="ESC-50", model=model)
        assert head["ours"] == 95.6 and head["comparable"] and head["result"] == "labels"
    (query_map,) = _find(rows, table=4, dataset="ESC-50", model="AudioCLIP full", metric="mAP")
    assert (query_map["paper"], query_map["ours"], query_map["comparable"]) == (76.97, 78.0, True)
    (query_p1,) = _find(rows, table=4, dataset="ESC-50", model="AudioCLIP full", metric="P@1")
    assert query_p1["ours"] == 50.0 and not query_p1["comparable"]  # the paper's P@1 is not defined: no gap
    (recall5,) = _find(rows, table=None, metric="Recall@5")
    assert recall5["note"] == "no such figure in the paper"
    (human,) = _find(rows, table=3, model="Human (2015)")
    assert human["ours"] is None and human["note"] == "other system"

    report = (runs / "REPORT.md").read_text()
    assert "| ESC-50 | audio → text | AudioCLIP full | fine-tuned | accuracy | 97.15 | 97.40 | +0.25 | reference |" \
        in report  # fmt: skip
    assert "| UrbanSound8K | audio → text | AudioCLIP full | zero-shot | accuracy | 68.78 | not run | — |" in report
    for title in ("## Table 1: the standalone audio head", "## Table 2: AudioCLIP after partial vs full training",
                  "## Table 3: comparison with other systems", "## Table 4: querying", "## Other runs"):  # fmt: skip
        assert title in report


def test_a_synthetic_run_of_a_paper_variant_is_only_under_other_runs(real_runs):
    runs, rows = real_runs
    (synthetic,) = [r for r in rows if r["source"] and "finetune-esc50-synthetic" in r["source"]]
    assert synthetic["table"] is None and synthetic["paper"] is None and not synthetic["comparable"]
    assert synthetic["note"] == "synthetic data" and synthetic["ours"] == 100.0
    assert all(r["ours"] != 100.0 for r in rows if r["table"] is not None)


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    """The demo's run (tiny AudioCLIP fine-tuned on synthetic ESC-50 through `audioclip fit`) and zero-shot and
    querying results of a tiny checkpoint on that synthetic data."""
    base = tmp_path_factory.mktemp("demo")
    esc50 = write_esc50(base / "esc50", clips_per_class=5, classes=3, progress=False)
    runs = base / "runs"
    run_lightning_cli(["fit", "--config", str(ROOT / "conf/trainer.yaml"), "--config", str(ROOT / "conf/demo.yaml"),
                       "--data.init_args.root", str(esc50), "--data.init_args.num_workers", "0",
                       "--data.init_args.persistent_workers", "false", "--data.init_args.batch_size", "4",
                       "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
                       "--trainer.default_root_dir", str(runs / "demo" / "fold1"),
                       "--trainer.logger.init_args.save_dir", str(runs / "demo" / "fold1")])  # fmt: skip
    torch.manual_seed(0)
    checkpoint = base / "tiny.pt"
    torch.save(audioclip.create_model("audioclip-tiny").state_dict(), checkpoint)
    for task in ("zeroshot", "query"):
        assert main(["evaluate", task, "--dataset", "esc50", "--root", str(esc50), "--checkpoint", str(checkpoint),
                     "--out", str(runs / "eval")]) == 0  # fmt: skip
    return runs


def test_the_demos_synthetic_run_is_never_comparable(demo_runs):
    metrics = json.loads((demo_runs / "demo" / "fold1" / "test_metrics.json").read_text())
    assert (metrics["variant"], metrics["data"], metrics["dataset"], metrics["protocol"]) == (
        "other", "synthetic", "esc50", "honest")  # fmt: skip
    assert metrics["test_fold"] == 1 and metrics["train_folds"] == [2, 3, 4, 5] and metrics["trained_on_target"]
    assert main(["report", "--runs", str(demo_runs), "--no-wandb"]) == 0
    rows = json.loads((demo_runs / "REPORT.json").read_text())["rows"]
    assert not any(r["comparable"] for r in rows)
    assert all(r["ours"] is None for r in rows if r["table"] is not None)
    demo = [r for r in rows if r["source"] and "demo" in r["source"]]
    assert demo and all(r["table"] is None and r["note"] == "synthetic data" for r in demo)
    report = (demo_runs / "REPORT.md").read_text()
    other = report[report.index("## Other runs") :]
    assert str(demo_runs / "demo") in other and str(demo_runs / "demo") not in report[: report.index("## Other runs")]


def test_report_embeds_png_plots_that_exist(demo_runs):
    main(["report", "--runs", str(demo_runs), "--no-wandb"])
    report = (demo_runs / "REPORT.md").read_text()
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", report)
    assert sorted(p.rsplit("/", 1)[-1] for p in links) == [
        "query-esc50-pr.png",
        "zeroshot-esc50-confusion.png",
        "zeroshot-esc50-per-class.png",
    ]
    for link in links:
        assert (demo_runs / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_logs_tables_and_plots_to_wandb_offline(demo_runs, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    assert main(["report", "--runs", str(demo_runs)]) == 0
    run_dirs = list((demo_runs / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1
    media = run_dirs[0] / "files" / "media"
    tables = sorted(p.name.split("_")[0] for p in (media / "table" / "report").glob("*.table.json"))
    assert tables == ["other", "peers", "table1", "table2", "table3", "table4"]
    images = sorted(p.name.rsplit("_", 2)[0] for p in (media / "images" / "report").glob("*.png"))
    assert images == ["query-esc50-pr", "zeroshot-esc50-confusion", "zeroshot-esc50-per-class"]
    staged = [e["local_path"] for r in wandb_records(demo_runs) if r.get("type") == "artifact"
              for e in r["artifact"]["manifest"]["contents"]]  # fmt: skip
    assert staged and all(Path(p).is_relative_to(demo_runs.resolve() / "wandb") for p in staged)  # in runs/wandb


def _cell(report: str, *starts: str) -> str:
    """The last cell (the command column) of the REPORT.md lines that begin with these cells (Tables 2 and 3 repeat
    some rows), the same in each."""
    (cell,) = {ln.rstrip(" |").rsplit(" | ", 1)[1] for ln in report.splitlines()
               if ln.startswith("| " + " | ".join(starts) + " |")}  # fmt: skip
    return cell


def test_every_row_names_the_command_that_reproduces_it(real_runs):
    runs, rows = real_runs
    report = (runs / "REPORT.md").read_text()
    # a paper row nobody ran: the command of make reproduce's row for it (no plan under runs/: the defaults)
    assert _cell(report, "UrbanSound8K", "audio → text", "AudioCLIP full", "zero-shot") == (
        f"`audioclip evaluate zeroshot --dataset us8k --root data/us8k --checkpoint full --out {runs}/eval "
        "--name zeroshot-us8k-full`")  # fmt: skip
    (tuned,) = _find(rows, table=2, dataset="ESC-50", model="AudioCLIP partial", trained_on_target=True)
    assert tuned["command"] == f"make cv-esc50 INIT=partial RUNS={runs}/from-partial"
    (head,) = _find(rows, table=1, dataset="UrbanSound8K", model="ESResNeXt-fbsp (30 epochs AudioSet; audio head)")
    assert head["command"] == f"make cv-us8k-audio-head INIT=esrnxfbsp RUNS={runs}"
    (imagenet,) = _find(rows, table=2, dataset="ImageNet", model="AudioCLIP full")
    assert imagenet["command"] is None and _cell(report, "ImageNet", "image → text", "AudioCLIP full") == "—"
    # a run of ours: the command that made it
    (synthetic,) = [r for r in rows if r["source"] and "finetune-esc50-synthetic" in r["source"]]
    assert synthetic["command"] == (f"audioclip fit --config {runs}/finetune-esc50-synthetic/fold1/config.yaml, and "
                                    "the same for fold2")  # fmt: skip
    (recall5,) = _find(rows, table=None, metric="Recall@5")
    # (the fixture's querying result records the root data/us8k)
    assert recall5["command"] == (f"audioclip evaluate query --dataset esc50 --root data/us8k --checkpoint full "
                                  f"--pair text:audio --out {runs}/eval --name query-esc50")  # fmt: skip


def test_the_command_column_follows_the_last_plan_of_make_reproduce(real_runs, tmp_path):
    from audioclip.evaluation.reproduce_rows import PLAN_FILE

    runs, _ = real_runs
    plan = {"rows": [{"row": "cv-esc50-full", "command": "make cv-esc50 INIT=mine.ckpt 'ARGS=--x a|b'"}]}
    (runs / PLAN_FILE).parent.mkdir(parents=True)
    (runs / PLAN_FILE).write_text(json.dumps(plan))
    try:
        assert main(["report", "--runs", str(runs), "--out", str(tmp_path / "REPORT.md"), "--no-wandb"]) == 0
    finally:
        (runs / PLAN_FILE).unlink()
    report = (tmp_path / "REPORT.md").read_text()
    # the pipe is escaped, or it would end the Markdown cell
    assert _cell(report, "ESC-50", "audio → text", "AudioCLIP full", "fine-tuned") == (
        "`make cv-esc50 INIT=mine.ckpt 'ARGS=--x a\\|b'`")  # fmt: skip
    # a row the plan left out (ROWS=) keeps its default command
    assert _cell(report, "UrbanSound8K", "audio → text", "AudioCLIP full", "fine-tuned") == (
        f"`make cv-us8k INIT=full RUNS={runs}`")  # fmt: skip
