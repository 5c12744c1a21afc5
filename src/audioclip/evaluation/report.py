"""`make report`: the latest results under runs/ gathered into a Markdown report shaped like the paper's tables.

    python -m audioclip.evaluation.report [--runs runs] [--out runs/REPORT.md] [--no-wandb]

Reads ``runs/eval/*/results.json`` (``audioclip evaluate``), the cross-validation tables ``runs/finetune-*/cv.csv``
(``make cv-esc50`` / ``cv-us8k``) and every ``runs/<phase>/fold*/test_metrics.json``. Tables follow Guzhov et al.
2021 (arXiv 2106.13043): table 2 (classification accuracy), table 3 (AudioSet mAP), table 4 (querying P@1 / R@1 /
mAP), with the paper's figure beside ours and the gap in percentage points. The paper's figures here are the ones
stated in its abstract (ESC-50 / UrbanSound8K zero-shot and fine-tuned accuracy); every other paper figure is
"n/a" until someone copies it from the paper's tables, rather than risk a wrong number. Plots (per-class accuracy,
confusion matrix, precision-recall curves) are PNG files next to the report, embedded in it and logged to W&B.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from audioclip.outputs import make_dir, write_text

# The paper's abstract: "accuracies of 90.07% on the UrbanSound8K and 97.15% on the ESC-50 datasets ... new
# baselines in the zero-shot ESC-task on the same datasets (68.78% and 69.40%, respectively)".
PAPER_ACCURACY: dict[tuple[str, str], float | None] = {
    ("esc50", "zeroshot"): 0.6940,
    ("esc50", "finetuned"): 0.9715,
    ("us8k", "zeroshot"): 0.6878,
    ("us8k", "finetuned"): 0.9007,
    ("imagefolder", "zeroshot"): None,
}
PAPER_AUDIOSET_MAP: dict[str, float | None] = {"audio": None, "image": None, "both": None}
# table 4's rows; its figures are not copied here yet
PAPER_QUERY_ROWS = (
    ("imagefolder", "text", "image"),
    ("audioset", "text", "image"),
    ("audioset", "text", "audio"),
    ("audioset", "audio", "image"),
    ("audioset", "image", "audio"),
    ("us8k", "text", "audio"),
    ("esc50", "text", "audio"),
)
DATASET_NAMES = {"esc50": "ESC-50", "us8k": "UrbanSound8K", "audioset": "AudioSet", "imagefolder": "ImageNet-style"}
FINETUNE_PHASES = {"esc50": "finetune-esc50", "us8k": "finetune-us8k"}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def _gap(ours: float | None, paper: float | None) -> str:
    return "n/a" if ours is None or paper is None else f"{100 * (ours - paper):+.2f}"


def latest_results(runs: Path) -> list[tuple[Path, dict]]:
    """Every runs/eval/*/results.json, newest first, keeping the newest per (task, dataset, pairs)."""
    found = []
    for path in runs.glob("eval/*/results.json"):
        result = json.loads(path.read_text())
        found.append((result.get("created", ""), path.stat().st_mtime, path, result))
    found.sort(key=lambda item: item[:2], reverse=True)
    seen, latest = set(), []
    for _, _, path, result in found:
        pairs = tuple((r["query"], r["result"]) for r in result.get("results", []))
        key = (result["task"], result["dataset"], pairs)
        if key not in seen:
            seen.add(key)
            latest.append((path, result))
    return latest


def finetuned_accuracy(runs: Path, dataset: str) -> tuple[float, float | None, int, str] | None:
    """(mean, std, folds, source) of the cross-validation table, or of the fold results when there is none."""
    phase = runs / FINETUNE_PHASES[dataset]
    if (phase / "cv.csv").is_file():
        table = csv.DictReader((phase / "cv.csv").read_text().splitlines())
        rows = {row["fold"]: float(row["test_acc"]) for row in table}
        folds = len(rows) - 2  # the mean and std rows
        return rows["mean"], rows["std"], folds, str(phase / "cv.csv")
    accs = [json.loads(p.read_text())["test/acc"] for p in sorted(phase.glob("fold*/test_metrics.json"))]
    if not accs:
        return None
    return sum(accs) / len(accs), None, len(accs), f"{phase}/fold*/test_metrics.json"


def other_runs(runs: Path) -> list[tuple[str, dict]]:
    """test_metrics.json of runs outside the fine-tuning phases (the demo, AudioSet phases, ...)."""
    out = []
    for path in sorted(runs.glob("*/fold*/test_metrics.json")) + sorted(runs.glob("*/test_metrics.json")):
        if path.parts[-3] not in FINETUNE_PHASES.values():
            out.append((str(path.parent), json.loads(path.read_text())))
    return out


def _source(path: Path, result: dict) -> str:
    checkpoint = Path(result.get("checkpoint", "?")).name
    where = result.get("protocol", f"{result.get('num_samples', '?')} samples")
    return f"`{path.parent.name}`: {result['root']}, {where}, checkpoint `{checkpoint}`"


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
    ax.set_title(f"{DATASET_NAMES[result['dataset']]} zero-shot: per-class accuracy")
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
    ax.set_title(f"{DATASET_NAMES[result['dataset']]} zero-shot: confusion matrix (counts)")
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
    ax.set_title(f"{DATASET_NAMES[result['dataset']]} querying: precision-recall (mean over queries)")
    ax.legend()
    fig.tight_layout()
    path = fig_dir / f"{name}-pr.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def build_report(runs: str | Path = "runs", out: str | Path | None = None) -> tuple[Path, dict]:
    """Write the report and its figures; return its path and the tables and figures (for W&B)."""
    runs = Path(runs)
    out = Path(out) if out else runs / "REPORT.md"
    fig_dir = make_dir(out.parent / "report", "--out (make report: RUNS=)")
    latest = latest_results(runs)
    tables: dict[str, tuple[list[str], list[list[str]]]] = {}
    figures: list[Path] = []
    lines = [
        "# AudioCLIP-Lightning: results report",
        "",
        'Generated by `make report` from the latest results under `runs/`. Paper: Guzhov et al. 2021, "AudioCLIP: '
        'Extending CLIP to Image, Text and Audio" (arXiv 2106.13043). Percentages; the gap is ours minus the '
        "paper's, in percentage points. **n/a**: not measured here, or a paper figure not copied into this report "
        "(only the figures stated in the paper's abstract are); **—**: the paper does not report this row. The "
        "*evaluated on* column names the data, the part of it and the checkpoint: a row on other data (e.g. the "
        "synthetic sets of `make demo-data`) or with a checkpoint fine-tuned on the same dataset is a smoke test, "
        "not a comparison with the paper.",
        "",
    ]

    # ---- table 2: classification accuracy
    zeroshots = {r["dataset"]: (p, r) for p, r in latest if r["task"] == "zeroshot"}
    header = ["dataset", "setting", "ours", "paper", "gap", "evaluated on"]
    rows = []
    for dataset in ("esc50", "us8k", "imagefolder"):
        if dataset in zeroshots:
            path, result = zeroshots[dataset]
            ours, source = result["accuracy"], _source(path, result)
        else:
            ours, source = None, "not run (`audioclip evaluate zeroshot`)"
        paper = PAPER_ACCURACY[(dataset, "zeroshot")]
        rows.append([DATASET_NAMES[dataset], "zero-shot", _pct(ours), _pct(paper), _gap(ours, paper), source])
        if dataset in FINETUNE_PHASES:
            finetuned = finetuned_accuracy(runs, dataset)
            paper = PAPER_ACCURACY[(dataset, "finetuned")]
            if finetuned is None:
                rows.append([DATASET_NAMES[dataset], "fine-tuned", "n/a", _pct(paper), "n/a",
                             f"not run (`make cv-{dataset}`)"])  # fmt: skip
            else:
                mean, std, folds, source = finetuned
                ours_text = _pct(mean) + (f" ± {_pct(std)}" if std is not None else "")
                rows.append([DATASET_NAMES[dataset], "fine-tuned", ours_text, _pct(paper), _gap(mean, paper),
                             f"{folds} fold(s), `{source}`"])  # fmt: skip
    tables["table2_accuracy"] = (header, rows)
    lines += ["## Table 2: classification accuracy (%)", "", *_markdown(header, rows), ""]

    # ---- table 3: AudioSet mAP
    header = ["modality", "ours", "paper", "gap", "evaluated on"]
    audioset = zeroshots.get("audioset")
    rows = []
    for modality, paper in PAPER_AUDIOSET_MAP.items():
        ours = audioset[1]["map"].get(modality) if audioset else None
        source = _source(*audioset) if audioset else "not run (`audioclip evaluate zeroshot --dataset audioset`)"
        rows.append([modality, _pct(ours), _pct(paper), _gap(ours, paper), source])
    tables["table3_audioset_map"] = (header, rows)
    lines += ["## Table 3: AudioSet mAP (%)", "", *_markdown(header, rows), ""]

    # ---- table 4: querying
    header = ["dataset", "query → result", "P@1", "R@1", "mAP", "paper P@1 / R@1 / mAP", "gap mAP", "evaluated on"]
    measured = {}
    for path, result in latest:
        if result["task"] == "query":
            for row in result["results"]:
                measured.setdefault((result["dataset"], row["query"], row["result"]), (path, result, row))
    keys = list(PAPER_QUERY_ROWS) + sorted(k for k in measured if k not in PAPER_QUERY_ROWS)
    rows = []
    for key in keys:
        dataset, q, r = key
        in_paper = key in PAPER_QUERY_ROWS
        paper = "n/a" if in_paper else "—"
        if key in measured:
            path, result, row = measured[key]
            rows.append([DATASET_NAMES[dataset], f"{q} → {r}", _pct(row["p@1"]), _pct(row["r@1"]), _pct(row["map"]),
                         paper, "n/a" if in_paper else "—", _source(path, result)])  # fmt: skip
        elif in_paper:
            rows.append([DATASET_NAMES[dataset], f"{q} → {r}", "n/a", "n/a", "n/a", paper, "n/a", "not run"])
    tables["table4_querying"] = (header, rows)
    lines += ["## Table 4: querying (%)", "",
              "Per query: P@1 (top result relevant), R@1 (relevant results in the top 1 / relevant results), AP; "
              "averaged over the queries that have a relevant result. A result is relevant when its label set "
              "equals the query's.", "", *_markdown(header, rows), ""]  # fmt: skip

    # ---- cross-validation tables and other runs
    for dataset, phase in FINETUNE_PHASES.items():
        if (runs / phase / "cv.md").is_file():
            lines += [f"## Cross-validation: {DATASET_NAMES[dataset]} (`{runs / phase}`)", ""]
            lines += [(runs / phase / "cv.md").read_text().strip(), ""]
    others = other_runs(runs)
    if others:
        header = ["run", "test metrics", "checkpoint"]
        rows = [
            [f"`{run}`", ", ".join(f"{k} {_pct(v)}" for k, v in m.items() if isinstance(v, float)),
             f"`{Path(m.get('checkpoint', '?')).name}`"]
            for run, m in others
        ]  # fmt: skip
        tables["other_runs"] = (header, rows)
        lines += ["## Other runs (test split, %)", "", *_markdown(header, rows), ""]

    # ---- figures
    figure_lines = []
    for path, result in latest:
        name = path.parent.name
        if result["task"] == "zeroshot" and "confusion" in result:
            made = _plot_zeroshot(result, name, fig_dir)
        elif result["task"] == "query":
            made = [_plot_pr(result, name, fig_dir)]
        else:
            continue
        figures += made
        figure_lines += [f"### {_source(path, result)}", ""]
        figure_lines += [f"![{p.stem}]({os.path.relpath(p, out.parent)})" for p in made] + [""]
    if figure_lines:
        lines += ["## Figures", "", *figure_lines]
    write_text(out, "\n".join(lines).rstrip() + "\n", "--out (make report: RUNS=)")
    return out, {"tables": tables, "figures": figures}


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    align = ["---:" if re.fullmatch(r"(P@1|R@1|mAP|ours|paper|gap.*)", h) else "---" for h in header]
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"] + [
        "| " + " | ".join(row) + " |" for row in rows
    ]


def log_to_wandb(out: Path, content: dict) -> None:
    import wandb

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
