"""The report's peers table: published figures of other audio-text models on the rows this project measures.

`peers.csv` (shipped with the package, like `paper_tables.csv`) holds one published figure a row: LAION-CLAP (Wu et
al. 2023), MS-CLAP 2022 and 2023 (Elizalde et al. 2023, 2024) and ImageBind (Girdhar et al. 2023), each with the
protocol it was measured under, the paper, and where the figure was read (a file and commit of the authors'
repository, or a table of the paper). Only figures found in a source that can be read again are there; a row whose
figure could not be sourced is left out rather than recalled. The published protocols differ from this project's
and from each other's (one ESC-50 fold or all five, the prompt), so the table sets figures side by side and
computes no gap.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from importlib import resources

KEY = ("dataset", "query", "result", "trained_on_target", "metric")
ON_TARGET = {"yes": True, "no": False}
HEADER = ["dataset", "query → result", "setting", "metric", "model", "figure", "from", "protocol", "source"]


def peer_rows() -> list[dict]:
    """Every published peer figure, as shipped with the package."""
    text = resources.files("audioclip.evaluation").joinpath("peers.csv").read_text()
    return list(csv.DictReader(text.splitlines()))


def _key(row: dict) -> tuple:
    on_target = row["trained_on_target"]
    return (row["dataset"], row["query"], row["result"], ON_TARGET.get(on_target, on_target), row["metric"])


def peers_table(paper: Sequence[dict], comparable: Sequence[dict], variants: dict[str, str]) -> list[dict]:
    """For each benchmark row of the peers: AudioCLIP's figures from the paper (``paper``: rows of
    ``paper_tables.csv`` whose model is one of ``variants``), this project's figures from real data with the
    paper-size model (``comparable``: measures of the report), then the peers' published figures."""
    out: list[dict] = []
    peers = peer_rows()
    for key in dict.fromkeys(_key(row) for row in peers):
        bench = dict(zip(KEY, key, strict=True))
        # a figure the paper repeats (Table 3 quotes Table 2) once, from its first table
        first: dict[str, dict] = {}
        for row in paper:
            if row["model"] in variants and _key(row) == key:
                first.setdefault(row["model"], row)
        out += [{**bench, "model": model, "value": float(row["value_percent"]), "from": "AudioCLIP paper",
                 "protocol": "the paper's", "source": f"Guzhov et al. 2021, Table {row['table']}"}
                for model, row in first.items()]  # fmt: skip
        out += [{**bench, "model": f"AudioCLIP {m['variant']} ({m['model_name']})", "value": round(m["value"], 4),
                 "from": "this run", "protocol": m["protocol"], "source": m["source"]}
                for m in comparable if _key(m) == key]  # fmt: skip
        out += [{**bench, "model": row["model"], "value": float(row["value_percent"]), "from": "published",
                 "protocol": row["protocol"], "source": f"{row['paper']}; {row['source']}"}
                for row in peers if _key(row) == key]  # fmt: skip
    return out


def render_peers(table: Sequence[dict], markdown) -> list[str]:  # noqa: ANN001 - report._markdown
    """The peers section of REPORT.md."""
    lines = [
        "## Peers: published figures of other audio-text models",
        "",
        "Beside AudioCLIP's figures from the paper and this run's (real data, the paper-size model), the figures "
        "LAION-CLAP, MS-CLAP and ImageBind published for the same row, each with its protocol and where it was read "
        "(`audioclip/evaluation/peers.csv`). The protocols differ (one ESC-50 fold or all five, the prompt): the "
        "figures stand side by side, without a gap.",
        "",
    ]
    setting = {True: "fine-tuned", False: "zero-shot"}
    body = [[r["dataset"], f"{r['query']} → {r['result']}", setting.get(r["trained_on_target"], "—"), r["metric"],
             r["model"], f"{r['value']:.2f}", r["from"], r["protocol"], r["source"]] for r in table]  # fmt: skip
    return [*lines, *markdown(HEADER, body), ""] if body else [*lines, "None.", ""]
