"""`make report`: every figure of the paper's Tables 1-4 beside this project's figure from a matching run.

    python -m audioclip.evaluation.report [--runs runs] [--out runs/REPORT.md] [--no-wandb]

Paper: Guzhov et al. 2021, "AudioCLIP: Extending CLIP to Image, Text and Audio" (arXiv 2106.13043). Table 1: the
standalone audio head (ESResNeXt-fbsp); Table 2: partial vs full training (zero-shot and fine-tuned accuracy,
AudioSet mAP, ImageNet); Table 3: comparison with other systems; Table 4: querying. The paper's figures come from
`paper_tables.csv` (one figure a row, transcribed from the paper; a copy of `shared/fixtures/paper/tables.csv`).

Our figures come from every `runs/**/test_metrics.json` (fine-tuning and training runs; the folds of one run group
are averaged) and every `runs/eval/*/results.json` (`audioclip evaluate`). Each records its model variant, dataset,
real or synthetic data, folds and protocol (`audioclip.models.lineage`). A figure is set beside a paper figure, with the
gap, only when it is comparable: real data all along its lineage, the paper-size model, the same variant, dataset,
query/result, metric and on-target or zero-shot setting. Everything else is listed under "Other runs", without a
paper figure. Each row names the command that reproduces it: a paper row the command of `make reproduce`'s row for
it (`audioclip.evaluation.reproduce_rows`, as last planned under `runs/`), a run of ours the command that made it. A
separate peers table sets the figures LAION-CLAP, MS-CLAP and ImageBind published beside the paper's and ours on the
same rows (`audioclip.evaluation.peers`). `REPORT.json` holds the rows; `REPORT.md` is rendered from it. Plots
(per-class accuracy, confusion matrix, precision-recall curves) are PNG files next to the report, embedded in it and
logged to W&B.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from audioclip.evaluation.peers import peers_table, render_peers
from audioclip.evaluation.reproduce_rows import commands as reproduce_commands
from audioclip.evaluation.reproduce_rows import evaluate_command, fit_command, row_for
from audioclip.outputs import make_dir, write_text

TABLE_TITLES = {
    1: "Table 1: the standalone audio head (ESResNeXt-fbsp)",
    2: "Table 2: AudioCLIP after partial vs full training",
    3: "Table 3: comparison with other systems",
    4: "Table 4: querying",
}
# the paper's rows that this project can reproduce, by the variant that makes them (audioclip.models.lineage)
PAPER_VARIANTS = {
    "ESResNeXt-fbsp (30 epochs AudioSet; audio head)": "audio-head",
    "Audio-Head (ESResNeXt-fbsp, AudioCLIP paper's training)": "audio-head",
    "AudioCLIP partial": "partial",
    "AudioCLIP full": "full",
}
PAPER_SIZE_MODELS = ("audioclip", "esresnext-fbsp")
# Table 4's P@1 and R@1 are not defined in the paper well enough to recompute (shared/fixtures/paper/README.md)
UNDEFINED_METRICS = {m: "the paper's definition is unknown: compare mAP" for m in ("P@1", "R@1")}
DATASETS = {"esc50": "ESC-50", "us8k": "UrbanSound8K", "audioset": "AudioSet", "imagefolder": "ImageFolder",
            "clotho": "Clotho", "audiocaps": "AudioCaps"}  # fmt: skip
# test metric keys of the training phases -> (query, metric); the result side comes from the run's record
TEST_METRICS = {
    "test/acc": ("audio", "accuracy"),
    "test/map": ("audio", "mAP"),
    "test/map_audio": ("audio", "mAP"),
    "test/map_image": ("image", "mAP"),
    "test/map_both": ("audio+image", "mAP"),
}
MAP_QUERIES = {"audio": "audio", "image": "image", "both": "audio+image"}
QUERY_METRICS = {"p@1": "P@1", "r@1": "R@1", "map": "mAP", "recall@1": "Recall@1", "recall@5": "Recall@5",
                 "recall@10": "Recall@10", "map@10": "mAP@10"}  # fmt: skip


def paper_rows() -> list[dict]:
    """Every figure of the paper's Tables 1-4, as shipped with the package."""
    text = resources.files("audioclip.evaluation").joinpath("paper_tables.csv").read_text()
    return list(csv.DictReader(text.splitlines()))


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


# ------------------------------------------------------------------------------------------------- our measurements
def _measure(record: dict, query: str, result: str, metric: str, value: float, source: str, **extra) -> dict:
    """One figure of ours with what it takes to decide whether it is comparable with the paper's."""
    dataset = DATASETS.get(record.get("dataset", ""), record.get("dataset") or "?")
    return {
        "dataset": dataset,
        "query": query,
        "result": result,
        "variant": record.get("variant", "other"),
        "model_name": record.get("model", "?"),
        "trained_on_target": bool(record.get("trained_on_target", False)),
        "data": record.get("data", "unknown"),
        "real_lineage": bool(record.get("real_lineage", False)),
        "metric": metric,
        "value": 100 * value,
        "protocol": record.get("protocol", "unknown"),
        "source": source,
        **extra,
    }


def _run_group(path: Path) -> Path:
    """The folder whose fold*/ runs are averaged (runs/finetune-esc50 for runs/finetune-esc50/fold3)."""
    run = path.parent
    return run.parent if re.fullmatch(r"fold\d+", run.name) else run


def training_measures(runs: Path) -> list[dict]:
    """The test figures of training runs (`test_metrics.json`), averaged over the folds of a run group."""
    groups: dict[tuple, list[tuple[dict, Path]]] = {}
    for path in sorted(runs.rglob("test_metrics.json")):
        record = json.loads(path.read_text())
        key = (_run_group(path), record.get("protocol"), record.get("variant"), record.get("data"))
        groups.setdefault(key, []).append((record, path))
    out = []
    for (group, *_), members in groups.items():
        record = members[0][0]
        for name, (query, metric) in TEST_METRICS.items():
            values = [m[name] for m, _ in members if isinstance(m.get(name), (int, float))]
            if not values:
                continue
            folds = sorted(m["test_fold"] for m, _ in members if m.get("test_fold") is not None)
            spread = f" ± {100 * statistics.stdev(values):.2f}" if len(values) > 1 else ""
            where = f"test fold{'s' if len(folds) > 1 else ''} {', '.join(map(str, folds))}" if folds else "test split"
            source = f"`{group}` ({where}{spread})"
            out.append(_measure(record, query, record.get("result", "text"), metric, statistics.fmean(values), source,
                                real_lineage=all(m.get("real_lineage") for m, _ in members),
                                command=fit_command([path.parent for _, path in members])))  # fmt: skip
    return out


def latest_results(runs: Path) -> list[tuple[Path, dict]]:
    """Every runs/eval/*/results.json, newest first, keeping the newest per (task, dataset, pairs, checkpoint)."""
    found = []
    for path in runs.glob("eval/*/results.json"):
        result = json.loads(path.read_text())
        found.append((result.get("created", ""), path.stat().st_mtime, path, result))
    found.sort(key=lambda item: item[:2], reverse=True)
    seen, latest = set(), []
    for _, _, path, result in found:
        pairs = tuple((r["query"], r["result"]) for r in result.get("results", []))
        key = (result["task"], result["dataset"], pairs, result.get("checkpoint"))
        if key not in seen:
            seen.add(key)
            latest.append((path, result))
    return latest


def _source(path: Path, result: dict) -> str:
    checkpoint = Path(result.get("checkpoint", "?")).name
    return f"`{path.parent.name}`: {result['root']}, {result.get('evaluated_on', '?')}, checkpoint `{checkpoint}`"


def evaluation_measures(latest: list[tuple[Path, dict]]) -> list[dict]:
    """The figures of `audioclip evaluate` results: zero-shot accuracy or mAP, and querying."""
    out = []
    for path, result in latest:
        source, command = _source(path, result), evaluate_command(path, result)
        if result["task"] == "zeroshot" and "map" in result:
            for name, value in result["map"].items():
                out.append(_measure(result, MAP_QUERIES[name], "text", "mAP", value, source, command=command))
        elif result["task"] == "zeroshot":
            query = result.get("modality", "audio")
            out.append(_measure(result, query, "text", "accuracy", result["accuracy"], source, command=command))
        elif result["task"] == "probe":  # no paper figure: the AudioCLIP paper has no linear probe
            spread = f" ± {100 * result['fold_std']:.2f}" if result.get("fold_std") is not None else ""
            out.append(_measure(result, "audio", "labels", "linear-probe accuracy", result["fold_mean"],
                                f"{source} (mean{spread} over folds)", command=command))  # fmt: skip
        else:
            for row in result["results"]:
                for key, metric in QUERY_METRICS.items():
                    if key in row:
                        out.append(_measure(result, row["query"], row["result"], metric, row[key], source,
                                            command=command))
    return out


# ------------------------------------------------------------------------------------------------------ the rows
def why_not_comparable(measure: dict) -> str | None:
    """None when the figure may stand beside the paper's, else the reason, in words."""
    if measure["data"] != "real":
        return f"{measure['data']} data"
    if not measure["real_lineage"]:
        return "weights trained on synthetic data"
    if measure["model_name"] not in PAPER_SIZE_MODELS:
        return f"model {measure['model_name']} is not the paper's size"
    if measure["variant"] not in set(PAPER_VARIANTS.values()):
        return f"variant {measure['variant']} is not one of the paper's"
    return None


def _on_target(paper: dict) -> bool | None:
    return {"yes": True, "no": False}.get(paper["trained_on_target"])


def _matches(paper: dict, measure: dict) -> bool:
    same = (paper["dataset"], paper["query"], paper["result"], PAPER_VARIANTS.get(paper["model"]), paper["metric"])
    ours = (measure["dataset"], measure["query"], measure["result"], measure["variant"], measure["metric"])
    # every model of the paper was trained on AudioSet: on-target or zero-shot tells nothing apart there
    return same == ours and (paper["dataset"] == "AudioSet" or _on_target(paper) == measure["trained_on_target"])


def _row(paper: dict | None, measure: dict | None, comparable: bool, note: str, command: str | None = None) -> dict:
    base = paper or measure
    return {
        "table": int(paper["table"]) if paper else None,
        "dataset": base["dataset"],
        "query": base["query"],
        "result": base["result"],
        "model": paper["model"] if paper else f"{measure['variant']} ({measure['model_name']})",
        "trained_on_target": _on_target(paper) if paper else measure["trained_on_target"],
        "metric": base["metric"],
        "paper": float(paper["value_percent"]) if paper else None,
        "ours": None if measure is None else round(measure["value"], 4),
        "comparable": comparable,
        "protocol": None if measure is None else measure["protocol"],
        "source": None if measure is None else measure["source"],
        "note": note,
        "command": command if paper else measure.get("command"),
    }


def _reproducing(paper: dict, commands: dict[str, str]) -> str | None:
    """The command of `make reproduce`'s row for this paper figure, None when it has none."""
    dataset = {title: name for name, title in DATASETS.items()}.get(paper["dataset"], "")
    row = row_for(dataset, PAPER_VARIANTS[paper["model"]], paper["trained_on_target"] == "yes", paper["query"],
                  paper["result"], paper["metric"])  # fmt: skip
    return None if row is None else commands.get(row.name)


def report_rows(measures: list[dict], commands: dict[str, str] | None = None) -> list[dict]:
    """Every paper row (with each comparable figure of ours, or "not run"), then every other figure of ours.
    `commands`: the command of each row of `make reproduce` by name (`reproduce_rows.commands`)."""
    comparable = [m for m in measures if why_not_comparable(m) is None]
    used: set[int] = set()
    rows = []
    for paper in paper_rows():
        if paper["model"] not in PAPER_VARIANTS:
            rows.append(_row(paper, None, False, "other system"))
            continue
        command = _reproducing(paper, commands or {})
        found = [m for m in comparable if _matches(paper, m)]
        used.update(id(m) for m in found)
        if paper["metric"] in UNDEFINED_METRICS:  # shown, never given a gap (docs/evaluation.md)
            rows += [_row(paper, m, False, UNDEFINED_METRICS[paper["metric"]], command) for m in found]
        else:
            rows += [_row(paper, m, True, "", command) for m in found]
        rows += [] if found else [_row(paper, None, False, "not run", command)]
    for measure in measures:
        if id(measure) not in used:
            rows.append(_row(None, measure, False, why_not_comparable(measure) or "no such figure in the paper"))
    return rows


# --------------------------------------------------------------------------------------------------- rendering
def _setting(row: dict) -> str:
    if row["dataset"] == "AudioSet":  # every model here was trained on AudioSet
        return "trained on AudioSet"
    return {True: "fine-tuned", False: "zero-shot", None: "—"}[row["trained_on_target"]]


def render_markdown(rows: list[dict], figure_lines: list[str], peers: Sequence[dict] = ()) -> list[str]:
    lines = [
        "# AudioCLIP-Lightning: results report",
        "",
        "Generated by `make report` from `REPORT.json` (same folder). Paper: Guzhov et al. 2021, \"AudioCLIP: "
        "Extending CLIP to Image, Text and Audio\" (arXiv 2106.13043); its figures come from the package's "
        "`paper_tables.csv`. Percentages; the gap is ours minus the paper's, in percentage points. **not run**: no "
        "comparable run under `runs/` (real data all along, the paper-size model, the same variant, data set, "
        "setting and metric); **other system**: a published system this project does not re-implement. Fine-tuned "
        "figures name their protocol: `honest` selects the checkpoint on a validation split of the training folds, "
        "`reference` on the test fold, as the released AudioCLIP trainer (and so the paper) did. Results that cannot "
        "be compared (synthetic data, a tiny model, another variant) are listed under *Other runs*, without a paper "
        "figure.",
        "",
    ]
    header = ["dataset", "query → result", "model", "setting", "metric", "paper", "ours", "gap", "protocol", "source",
              "command"]  # fmt: skip
    for table, title in TABLE_TITLES.items():
        body = []
        for r in rows:
            if r["table"] != table:
                continue
            ours = _pct(r["ours"]) if r["ours"] is not None else r["note"]
            gap = f"{r['ours'] - r['paper']:+.2f}" if r["comparable"] else "—"
            setting = _setting(r)
            body.append([r["dataset"], f"{r['query']} → {r['result']}", r["model"], setting, r["metric"],
                         _pct(r["paper"]), ours, gap, r["protocol"] or "—", r["source"] or "—",
                         _code(r["command"])])  # fmt: skip
        lines += [f"## {title}", ""]
        if table == 4:
            lines += ["The paper's P@1 and R@1 are not defined well enough to be recomputed (docs/evaluation.md): "
                      "ours are shown without a gap; compare mAP. ImageNet rows need an ImageNet evaluation the report "
                      "can recognise, which `--dataset imagefolder` is not.", ""]  # fmt: skip
        lines += [*_markdown(header, body), ""]
    lines += render_peers(peers, _markdown)
    others = [r for r in rows if r["table"] is None]
    lines += ["## Other runs", ""]
    if others:
        header = ["dataset", "query → result", "model", "setting", "metric", "ours", "protocol", "why not compared",
                  "source", "command"]  # fmt: skip
        body = [[r["dataset"], f"{r['query']} → {r['result']}", r["model"], _setting(r),
                 r["metric"], _pct(r["ours"]), r["protocol"] or "—", r["note"], r["source"] or "—",
                 _code(r["command"])] for r in others]  # fmt: skip
        lines += [*_markdown(header, body), ""]
    else:
        lines += ["None.", ""]
    if figure_lines:
        lines += ["## Figures", "", *figure_lines]
    return lines


def _plot_zeroshot(result: dict, name: str, fig_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    names, per_class = result["class_names"], result["per_class_accuracy"]
    height = max(3.0, 0.22 * len(names) + 1)
    fig, ax = plt.subplots(figsize=(7, height))
    ax.barh(range(len(names)), [100 * x for x in per_class], color="tab:blue")
    ax.set_yticks(range(len(names)), names, fontsize=7 if len(names) > 20 else 9)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy (%)")
    ax.set_title(f"{DATASETS.get(result['dataset'], result['dataset'])} zero-shot: per-class accuracy")
    fig.tight_layout()
    bars = fig_dir / f"{name}-per-class.png"
    fig.savefig(bars, dpi=110)
    plt.close(fig)

    confusion = result["confusion"]
    size = min(12.0, max(4.0, 0.25 * len(names) + 2))
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6 if len(names) > 20 else 8)
    ax.set_yticks(range(len(names)), names, fontsize=6 if len(names) > 20 else 8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{DATASETS.get(result['dataset'], result['dataset'])} zero-shot: confusion matrix (counts)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    matrix = fig_dir / f"{name}-confusion.png"
    fig.savefig(matrix, dpi=110)
    plt.close(fig)
    return [bars, matrix]


def _plot_pr(result: dict, name: str, fig_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for row in result["results"]:
        curve = row["pr_curve"]
        ax.plot(curve["recall"], curve["precision"], marker="o", ms=3, label=f"{row['query']} → {row['result']}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("interpolated precision")
    ax.set_title(f"{DATASETS.get(result['dataset'], result['dataset'])} querying: precision-recall (mean over queries)")
    ax.legend()
    fig.tight_layout()
    path = fig_dir / f"{name}-pr.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def build_report(runs: str | Path = "runs", out: str | Path | None = None) -> tuple[Path, dict]:
    """Write REPORT.json, REPORT.md and the figures; return the Markdown's path and the tables and figures."""
    runs = Path(runs)
    out = Path(out) if out else runs / "REPORT.md"
    fig_dir = make_dir(out.parent / "report", "--out (make report: RUNS=)")
    latest = latest_results(runs)
    measures = training_measures(runs) + evaluation_measures(latest)
    rows = report_rows(measures, reproduce_commands(runs))
    peers = peers_table(paper_rows(), [m for m in measures if why_not_comparable(m) is None], PAPER_VARIANTS)
    write_text(out.with_suffix(".json"), json.dumps({"rows": rows, "peers": peers}, indent=2) + "\n",
               "--out (make report: RUNS=)")  # fmt: skip

    figures: list[Path] = []
    figure_lines: list[str] = []
    for path, result in latest:
        name = path.parent.name
        if result["task"] == "zeroshot" and "confusion" in result:
            made = _plot_zeroshot(result, name, fig_dir)
        elif result["task"] == "query" and all("pr_curve" in row for row in result["results"]):
            made = [_plot_pr(result, name, fig_dir)]  # caption retrieval (R@k, mAP@10) has no curve
        else:
            continue
        figures += made
        figure_lines += [f"### {_source(path, result)}", ""]
        figure_lines += [f"![{p.stem}]({os.path.relpath(p, out.parent)})" for p in made] + [""]
    write_text(out, "\n".join(render_markdown(rows, figure_lines, peers)).rstrip() + "\n", "--out (make report: RUNS=)")
    keys = ["table", "dataset", "query", "result", "model", "trained_on_target", "metric", "paper", "ours",
            "comparable", "protocol", "source", "note", "command"]  # fmt: skip
    tables = {
        f"table{t}": (keys, [[str(r[k]) for k in keys] for r in rows if r["table"] == t]) for t in TABLE_TITLES
    }
    tables["other_runs"] = (keys, [[str(r[k]) for k in keys] for r in rows if r["table"] is None])
    peer_keys = ["dataset", "query", "result", "trained_on_target", "metric", "model", "value", "from", "protocol",
                 "source"]  # fmt: skip
    tables["peers"] = (peer_keys, [[str(r[k]) for k in peer_keys] for r in peers])
    return out, {"tables": tables, "figures": figures, "rows": rows, "peers": peers}


def _code(command: str | None) -> str:
    """A command in a Markdown table cell: as code, its pipes escaped (they would end the cell)."""
    return "—" if not command else "`" + command.replace("|", "\\|") + "`"


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    align = ["---:" if re.fullmatch(r"(ours|paper|gap)", h) else "---" for h in header]
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"] + [
        "| " + " | ".join(row) + " |" for row in rows
    ]


def log_to_wandb(out: Path, content: dict) -> None:
    import wandb

    from audioclip.outputs import stage_media_in

    stage_media_in(out.parent)  # the tables' files inside the runs folder, not in ~/.local/share/wandb
    with wandb.init(project="audioclip", name="report", dir=str(out.parent), job_type="report") as run:
        tables = {
            f"report/{name}": wandb.Table(columns=list(header), data=[list(r) for r in rows])
            for name, (header, rows) in content["tables"].items()
        }
        run.log({**tables, **{f"report/{p.stem}": wandb.Image(str(p)) for p in content["figures"]}})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="audioclip report", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs", help="the runs directory to gather")
    parser.add_argument("--out", help="the report file (default RUNS/REPORT.md; figures go to its folder/report/)")
    parser.add_argument("--no-wandb", action="store_true", help="do not log the tables and figures to W&B")
    args = parser.parse_args(argv)
    if not Path(args.runs).is_dir():
        raise FileNotFoundError(f"{args.runs}: no runs directory; train or evaluate something first")
    out, content = build_report(args.runs, args.out)
    print(f"Report: {out} ({len(content['figures'])} figures in {out.parent / 'report'})")
    if not args.no_wandb:
        log_to_wandb(out, content)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
