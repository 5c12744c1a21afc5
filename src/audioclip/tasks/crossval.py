"""Cross-validation table: per-fold test accuracy of `runs/<phase>/*/test_metrics.json`, mean ± std.

    audioclip crossval runs/finetune-esc50      # writes cv.csv and cv.md there, logs to W&B

Each run's fold and dataset are read from its `test_metrics.json` (`audioclip fit` records them), never from the
name of its folder; runs of two datasets, or two runs of one fold, are refused.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def collect(phase_dir: Path, metric: str = "test/acc") -> list[tuple[int, float]]:
    """(test fold, metric) of every run directly under `phase_dir`, by fold."""
    rows, datasets, where = [], set(), {}
    for path in sorted(phase_dir.glob("*/test_metrics.json")):
        record = json.loads(path.read_text())
        if not isinstance(record.get("test_fold"), int):
            raise ValueError(f"{path}: records no test_fold; rerun the fold with this version of `audioclip fit`")
        fold = record["test_fold"]
        if fold in where:
            raise ValueError(f"{path}: fold {fold} again (also {where[fold]}); keep one run per fold in {phase_dir}")
        where[fold] = path
        datasets.add(record.get("dataset"))
        rows.append((fold, float(record[metric])))
    if not rows:
        raise FileNotFoundError(f"{phase_dir}: no fold run (*/test_metrics.json); run the folds first")
    if len(datasets) > 1:
        raise ValueError(f"{phase_dir}: runs of several datasets ({', '.join(sorted(map(str, datasets)))})")
    return sorted(rows)


def write_tables(phase_dir: Path, rows: list[tuple[int, float]]) -> tuple[float, float]:
    values = [v for _, v in rows]
    mean, std = statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)
    csv = ["fold,test_acc"] + [f"{k},{v:.4f}" for k, v in rows] + [f"mean,{mean:.4f}", f"std,{std:.4f}"]
    (phase_dir / "cv.csv").write_text("\n".join(csv) + "\n")
    md = ["| fold | test accuracy |", "|---:|---:|"] + [f"| {k} | {v:.2%} |" for k, v in rows]
    md.append(f"| **mean ± std** | **{mean:.2%} ± {std:.2%}** |")
    (phase_dir / "cv.md").write_text("\n".join(md) + "\n")
    return mean, std


def log_to_wandb(phase_dir: Path, rows: list[tuple[int, float]], mean: float, std: float) -> None:
    import wandb

    with wandb.init(project="audioclip", name=f"{phase_dir.name}-cv", dir=str(phase_dir), job_type="crossval") as run:
        run.log({"cv/table": wandb.Table(columns=["fold", "test_acc"], data=[list(r) for r in rows])})
        run.summary.update({"cv/mean_acc": mean, "cv/std_acc": std, "cv/folds": len(rows)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="audioclip crossval", description=__doc__.splitlines()[0])
    parser.add_argument("phase_dir", type=Path, help="the phase's run folder, e.g. runs/finetune-esc50")
    phase_dir = parser.parse_args(sys.argv[1:] if argv is None else argv).phase_dir
    rows = collect(phase_dir)
    mean, std = write_tables(phase_dir, rows)
    print((phase_dir / "cv.md").read_text())
    log_to_wandb(phase_dir, rows, mean, std)
    return 0


if __name__ == "__main__":
    sys.exit(main())
