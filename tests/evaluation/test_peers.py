"""The peers table: every published figure of LAION-CLAP, MS-CLAP and ImageBind carries its paper and the place it
was read, which states that very figure; REPORT.md sets them beside AudioCLIP's paper figure and this run's real-data
figure on the same row, without a gap; caption retrieval results reach the report too."""

from __future__ import annotations

import json
import re

import pytest

from audioclip.cli import main
from audioclip.evaluation.peers import peer_rows

PEERS = ("LAION-CLAP", "MS-CLAP 2022", "MS-CLAP 2023", "ImageBind")


def test_every_peer_figure_has_a_paper_and_a_source_that_states_it():
    rows = peer_rows()
    assert {peer for peer in PEERS if any(row["model"].startswith(peer) for row in rows)} == set(PEERS)
    for row in rows:
        value = float(row["value_percent"])
        assert 0 < value <= 100 and row["protocol"].strip(), row
        assert re.search(r"et al\. 20\d\d, .+ \((ICASSP|CVPR|NeurIPS|ICML|arXiv)", row["paper"]), row["paper"]
        # a file at a commit of the authors' repository, or a table of the paper
        assert re.search(r"github\.com/\S+ \S+ at commit [0-9a-f]{7}|Table \d", row["source"]), row["source"]
        # the source quotes the figure, as a percentage or as a fraction
        quoted = {f"{value:g}", f"{value:.1f}", f"{value / 100:.4f}"}
        assert any(text in row["source"] for text in quoted), (row["model"], row["source"])
        assert row["dataset"] and row["metric"] and row["trained_on_target"] in ("yes", "no"), row


def _result(path, **fields) -> None:
    path.mkdir(parents=True)
    base = {"root": "data/esc50", "evaluated_on": "every fold", "model": "audioclip", "data": "real",
            "real_lineage": True, "trained_on_target": False, "protocol": "zero-shot",
            "created": "2026-12-01T00:00:00+00:00"}  # fmt: skip
    (path / "results.json").write_text(json.dumps({**base, **fields}))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    runs = tmp_path_factory.mktemp("peers") / "runs"
    _result(runs / "eval" / "zeroshot-esc50", task="zeroshot", dataset="esc50", accuracy=0.7012, checkpoint="full",
            variant="full")  # fmt: skip
    _result(runs / "eval" / "zeroshot-esc50-tiny", task="zeroshot", dataset="esc50", accuracy=0.99,
            checkpoint="tiny.pt", variant="full", data="synthetic", model="audioclip-tiny")  # fmt: skip
    rows = [{"query": "text", "result": "audio", "num_queries": 5225, "r@1": 0.021, "r@5": 0.07, "r@10": 0.12,
             "map@10": 0.05},
            {"query": "audio", "result": "text", "num_queries": 1045, "r@1": 0.03, "r@5": 0.1, "r@10": 0.15,
             "map@10": 0.04}]  # fmt: skip
    _result(runs / "eval" / "query-clotho", task="query", dataset="clotho", root="data/clotho", checkpoint="full",
            variant="full", results=rows, num_captions=5225)  # fmt: skip
    assert main(["report", "--runs", str(runs), "--no-wandb"]) == 0
    return runs, json.loads((runs / "REPORT.json").read_text())


def test_the_peers_stand_beside_the_paper_and_this_runs_real_figure(report):
    runs, content = report
    table = [(r["from"], r["model"], r["value"]) for r in content["peers"]]
    assert table[:3] == [("AudioCLIP paper", "AudioCLIP partial", 69.4), ("AudioCLIP paper", "AudioCLIP full", 68.6),
                         ("this run", "AudioCLIP full (audioclip)", 70.12)]  # fmt: skip
    assert ("published", "MS-CLAP 2023", 93.9) in table and ("published", "ImageBind (imagebind_huge)", 66.9) in table
    assert all(r["trained_on_target"] is False for r in content["peers"])  # every peer figure is zero-shot
    us8k = [(r["from"], r["model"], r["value"]) for r in content["peers"] if r["dataset"] == "UrbanSound8K"]
    assert us8k == [
        ("AudioCLIP paper", "AudioCLIP partial", 65.31),
        ("AudioCLIP paper", "AudioCLIP full", 68.78),
        ("published", "LAION-CLAP (the paper's model)", 77.0),
        ("published", "MS-CLAP 2022", 73.2),
    ]
    assert not any(r["value"] == 99.0 for r in content["peers"])  # synthetic data and a tiny model stay out
    text = (runs / "REPORT.md").read_text()
    peers_section = text[text.index("## Peers") : text.index("## Other runs")]
    assert "| ESC-50 | audio → text | zero-shot | accuracy | MS-CLAP 2023 | 93.90 | published | every clip (2,000)" \
        in peers_section  # fmt: skip
    assert "| AudioCLIP full (audioclip) | 70.12 | this run | zero-shot |" in peers_section
    assert text.index("## Table 4") < text.index("## Peers") and "| gap |" not in peers_section


def test_caption_retrieval_results_are_in_the_report_without_a_precision_recall_plot(report):
    runs, content = report
    clotho = [r for r in content["rows"] if r["dataset"] == "Clotho"]
    assert {(r["query"], r["result"], r["metric"]) for r in clotho} >= {("text", "audio", "R@1"),
                                                                      ("audio", "text", "mAP@10")}  # fmt: skip
    assert all(r["table"] is None and not r["comparable"] for r in clotho)
    assert not list((runs / "report").glob("query-clotho*"))
