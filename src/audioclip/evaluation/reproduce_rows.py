"""The rows of `make reproduce`: which command reproduces which of the paper's figures, what it needs on disk, and
what it costs on one GPU.

Paper: Guzhov et al. 2021, "AudioCLIP: Extending CLIP to Image, Text and Audio" (arXiv 2106.13043), Tables 1-4
(the figures themselves: `paper_tables.csv`, read by `audioclip.evaluation.report`). A row composes the project's
own commands and never re-implements them: `audioclip evaluate zeroshot | query` for the official weights
(docs/evaluation.md), and the fine-tuning phase targets `make finetune-<dataset>[-audio-head] FOLD=k INIT=...`
followed by `audioclip crossval`, which is what `make cv-<dataset>[-audio-head]` runs. `audioclip.evaluation.reproduce`
plans and runs them; `make report` puts each row's command beside the paper's figure.

The expected time on one GPU is an estimate, not a measurement (no GPU was at hand): the paper-size audio head's
matrix work per clip, counted from the layers' shapes (`benchmarks/profile_step.py`; docs/performance.md, "What
bounds the step: the roofline": 203 GFLOP forward and 663 GFLOP forward + backward for a batch of eight 5-s mono clips,
projection included), scaled by seconds x channels of audio, divided by an assumed sustained rate (`GPU_TFLOPS`),
plus a fixed start-up per process. docs/reproducing.md says how the rate was chosen and how to measure your own.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from audioclip.constants import FOLDS

# ------------------------------------------------------------------------------------------------- the cost model
# matrix work of the paper-size audio head per 5 s of one channel at 44.1 kHz (docs/performance.md, batch of 8)
FORWARD_GFLOP_PER_5S = (203 + 52.7 / 2) / 8  # body forward + the fbsp projection's forward half
TRAIN_GFLOP_PER_5S = (610 + 52.7) / 8  # body forward + backward, projection forward + filter-bank gradient
# CLIP's image head per 224-px frame: ResNet-50 is 4.1 G multiply-adds (He et al. 2016); CLIP's RN50 is close
IMAGE_GFLOP = 10.0
# assumed sustained rate of one current data-centre GPU on this network in bf16-mixed (docs/reproducing.md)
GPU_TFLOPS = 25.0
START_SECONDS = 30.0  # Python, the model and the data loaders, per process
EPOCHS = 50  # the fine-tuning phases' trainer.max_epochs (conf/finetune-*.yaml; paper section 4.3)
VAL_FRACTION = 0.1  # conf/data/*.yaml: the validation share of the training folds
# the audio each dataset's items carry: (seconds, channels) (data/esc50.py, data/us8k.py, conf/data/audioset.yaml)
AUDIO = {"esc50": (5.0, 1), "us8k": (4.0, 2), "audioset": (10.0, 1)}
# clips of the official releases, used when the data is not on disk; AudioSet: the rows of the official
# eval_segments.csv (shared/fixtures/meta/SOURCES.md), fewer once vanished videos are left out
OFFICIAL_CLIPS = {"esc50": 2000, "us8k": 8732, "audioset": 20371}

# ------------------------------------------------------------------------------------------------- the rows
TEXT_ACCURACY = (("audio", "text", "accuracy"),)
AUDIOSET_MAP = (("audio", "text", "mAP"), ("image", "text", "mAP"), ("audio+image", "text", "mAP"))
QUERY_METRICS = ("P@1", "R@1", "mAP")
AUDIOSET_PAIRS = (("text", "image"), ("text", "audio"), ("audio", "image"), ("image", "audio"))


def _querying(pairs: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str, str], ...]:
    return tuple((q, r, m) for q, r in pairs for m in QUERY_METRICS)


@dataclass(frozen=True)
class Row:
    """One command's worth of the paper: the figures it measures and how."""

    name: str
    task: str  # "zeroshot" or "query" (audioclip evaluate), "crossval" (every fold's fine-tune, then the table)
    dataset: str  # esc50, us8k, audioset
    variant: str  # the weights' variant (audioclip.models.lineage): full, partial, audio-head
    measures: tuple[tuple[str, str, str], ...]  # (query, result, metric) of each paper figure it makes
    on_target: bool  # the paper's "trained on target": fine-tuned here, or AudioSet (every model was trained on it)

    @property
    def title(self) -> str:
        model = {"audio-head": "the standalone audio head", "full": "AudioCLIP full", "partial": "AudioCLIP partial"}
        what = {"zeroshot": "zero-shot", "query": "querying", "crossval": "cross-validated fine-tuning"}[self.task]
        return f"{what}, {DATASET_TITLES[self.dataset]}, {model[self.variant]}"


DATASET_TITLES = {"esc50": "ESC-50", "us8k": "UrbanSound8K", "audioset": "AudioSet"}


def _rows() -> tuple[Row, ...]:
    rows = []
    for variant in ("full", "partial"):
        rows += [Row(f"zeroshot-{d}-{variant}", "zeroshot", d, variant, TEXT_ACCURACY, False)
                 for d in ("esc50", "us8k")]  # fmt: skip
        rows.append(Row(f"zeroshot-audioset-{variant}", "zeroshot", "audioset", variant, AUDIOSET_MAP, True))
    for variant in ("full", "partial"):
        rows += [Row(f"query-{d}-{variant}", "query", d, variant, _querying((("text", "audio"),)), False)
                 for d in ("esc50", "us8k")]  # fmt: skip
        rows.append(Row(f"query-audioset-{variant}", "query", "audioset", variant, _querying(AUDIOSET_PAIRS), True))
    for dataset in ("esc50", "us8k"):
        rows += [Row(f"cv-{dataset}-{v}", "crossval", dataset, v, TEXT_ACCURACY, True) for v in ("full", "partial")]
        rows.append(Row(f"cv-{dataset}-audio-head", "crossval", dataset, "audio-head",
                        (("audio", "labels", "accuracy"),), True))  # fmt: skip
    return tuple(rows)


# evaluation first (minutes), then the cross-validations (hours): an early stop leaves the most rows done
ROWS = _rows()
ROW_NAMES = tuple(r.name for r in ROWS)


def row_for(dataset: str, variant: str, on_target: bool, query: str, result: str, metric: str) -> Row | None:
    """The row that measures this paper figure, or None when `make reproduce` has none for it."""
    for row in ROWS:
        if (row.dataset, row.variant, row.on_target) == (dataset, variant, on_target) and (
            (query, result, metric) in row.measures
        ):
            return row
    return None


# ------------------------------------------------------------------------------------------------- the settings
@dataclass(frozen=True)
class Settings:
    """What the rows run on; the defaults are the Makefile's."""

    runs: Path = Path("runs")
    # dataset roots: the DataModules' layouts (data/README.md); AudioSet: shards of the official evaluation list
    roots: dict[str, str] = field(default_factory=lambda: {"esc50": "data/esc50", "us8k": "data/us8k",
                                                           "audioset": "data/audioset/eval/shards"})  # fmt: skip
    # the weights each variant starts from (INIT=): official tags, or checkpoints / run folders
    inits: dict[str, str] = field(default_factory=lambda: {"full": "full", "partial": "partial",
                                                           "audio-head": "esrnxfbsp"})  # fmt: skip
    folds: tuple[int, ...] = ()  # a subset of the official folds (FOLDS=); empty: all
    epochs: int | None = None  # --trainer.max_epochs of every fine-tune; None: the phase's own (50)
    tiny: bool = False  # the registry's tiny variants (tests, demos): audioclip-tiny, esresnext-fbsp-tiny
    protocol: str | None = None  # honest (the phases' default) or reference (the paper's: selected on the test fold)
    fit_args: str = ""  # more arguments of every fine-tune (ARGS=)
    eval_args: str = ""  # more arguments of every `audioclip evaluate` (EVAL_ARGS=)
    gpu_tflops: float = GPU_TFLOPS


DEFAULT_INITS = Settings().inits
DEFAULT_ROOTS = Settings().roots


AUDIOCLIP = (sys.executable, "-m", "audioclip.cli")  # the `audioclip` command of the running interpreter


@dataclass(frozen=True)
class Step:
    """One command of a row and the file that exists once it has finished."""

    name: str
    argv: tuple[str, ...]
    result: Path
    resumable: bool = False  # a training run: RESUME=1 continues it from its last checkpoint
    summary: bool = False  # reads the results of the steps before it: runs again whenever one of them ran

    def identity(self) -> list[str]:
        """The command without the interpreter's and the venv's paths: equal across runs of the same plan."""
        if self.argv[: len(AUDIOCLIP)] == AUDIOCLIP:
            return ["audioclip", *self.argv[len(AUDIOCLIP) :]]
        return [a for a in self.argv if not a.startswith("VENV=")]


def runs_of(row: Row, settings: Settings) -> Path:
    """Where a row's fine-tunes go: fine-tunes from `partial` apart, since their fold folders would collide."""
    return settings.runs / "from-partial" if row.variant == "partial" else settings.runs


def phase_of(row: Row) -> str:
    return f"finetune-{row.dataset}" + ("-audio-head" if row.variant == "audio-head" else "")


def folds_of(row: Row, settings: Settings) -> list[int]:
    official = range(1, FOLDS[row.dataset] + 1)
    return [k for k in official if not settings.folds or k in settings.folds]


TINY = {False: "audioclip-tiny", True: "esresnext-fbsp-tiny"}  # by "is it the standalone audio head"


def _fit_args(row: Row, settings: Settings) -> str:
    args = []
    if settings.tiny:
        args.append(f"--model.init_args.model {TINY[row.variant == 'audio-head']}")
    if settings.epochs is not None:
        args.append(f"--trainer.max_epochs {settings.epochs}")
    if settings.protocol:
        args.append(f"--data.init_args.protocol {settings.protocol}")
    return " ".join(args + ([settings.fit_args] if settings.fit_args else []))


def _audioclip(*args: str) -> tuple[str, ...]:
    return (*AUDIOCLIP, *args)


def _evaluate_args(row: Row, settings: Settings) -> list[str]:
    pairs = AUDIOSET_PAIRS if row.dataset == "audioset" else (("text", "audio"),)
    pair_args = [a for q, r in pairs for a in ("--pair", f"{q}:{r}")] if row.task == "query" else []
    return ["evaluate", row.task, "--dataset", row.dataset, "--root", settings.roots[row.dataset], "--checkpoint",
            settings.inits[row.variant], *pair_args, "--out", str(settings.runs / "eval"), "--name", row.name,
            *shlex.split(settings.eval_args)]  # fmt: skip


def steps(row: Row, settings: Settings) -> list[Step]:
    """The commands that make the row, in order."""
    if row.task != "crossval":
        result = settings.runs / "eval" / row.name / "results.json"
        return [Step("evaluate", _audioclip(*_evaluate_args(row, settings)), result)]
    runs, phase = runs_of(row, settings), phase_of(row)
    venv = Path(sys.executable).parent.parent
    out = []
    for k in folds_of(row, settings):
        argv = ("make", "--no-print-directory", phase, f"FOLD={k}", f"INIT={settings.inits[row.variant]}",
                f"DATA={settings.roots[row.dataset]}", f"RUNS={runs}", f"GROUP=reproduce-{row.name}", f"VENV={venv}",
                f"ARGS={_fit_args(row, settings)}")  # fmt: skip
        out.append(Step(f"fold{k}", argv, runs / phase / f"fold{k}" / "test_metrics.json", resumable=True))
    out.append(Step("crossval", _audioclip("crossval", str(runs / phase)), runs / phase / "cv.csv", summary=True))
    return out


def command(row: Row, settings: Settings) -> str:
    """The one command a user types for the row (what REPORT.md's command column shows)."""
    if row.task != "crossval":
        return shlex.join(["audioclip", *_evaluate_args(row, settings)])
    parts = ["make", f"cv-{phase_of(row).removeprefix('finetune-')}", f"INIT={settings.inits[row.variant]}"]
    if settings.roots[row.dataset] != DEFAULT_ROOTS[row.dataset]:
        parts.append(f"DATA={settings.roots[row.dataset]}")
    if runs_of(row, settings) != Path("runs"):
        parts.append(f"RUNS={runs_of(row, settings)}")
    if settings.folds:
        parts.append(f"FOLDS={' '.join(map(str, folds_of(row, settings)))}")
    if fit_args := _fit_args(row, settings):
        parts.append(f"ARGS={fit_args}")
    return shlex.join(parts)


# ------------------------------------------------------------------------------------------------- what is missing
def _data_missing(dataset: str, root: Path) -> str | None:
    from audioclip.data.esc50 import ESC50_METADATA
    from audioclip.data.us8k import US8K_METADATA

    needed = {"esc50": ESC50_METADATA, "us8k": US8K_METADATA, "audioset": Path("index.json")}[dataset]
    if (root / needed).is_file():
        return None
    get = {"esc50": "make data-esc50", "us8k": "make data-us8k",
           "audioset": "pack the official eval_segments.csv with `audioclip prepare audioset` (docs/audioset.md)"}
    return f"{DATASET_TITLES[dataset]} at {root} (no {needed}): {get[dataset]}"  # fmt: skip


def _weights_missing(init: str) -> str | None:
    from audioclip.models.pretrained import TAGS, cache_dir

    if init in TAGS:
        path = cache_dir() / TAGS[init].filename
        return None if path.is_file() else f"weights {init!r} ({path}): make weights"
    return None if Path(init).exists() else f"weights {init}: no such file or run folder"


def missing(row: Row, settings: Settings) -> list[str]:
    """What the row needs and is not on disk, each with the command that gets it; empty when it can run."""
    data = _data_missing(row.dataset, Path(settings.roots[row.dataset]))
    return [m for m in (data, _weights_missing(settings.inits[row.variant])) if m]


# ------------------------------------------------------------------------------------------------- the estimate
def clips_on_disk(dataset: str, root: Path) -> int | None:
    """The clips of a dataset root (its metadata rows, or its shards' items), None when it is not there."""
    import csv

    from audioclip.data.esc50 import ESC50_METADATA
    from audioclip.data.us8k import US8K_METADATA

    try:
        if dataset == "audioset":
            chunks = json.loads((root / "index.json").read_text())["chunks"]
            return sum(int(c["chunk_size"]) for c in chunks)
        metadata = root / {"esc50": ESC50_METADATA, "us8k": US8K_METADATA}[dataset]
        with open(metadata, newline="") as fh:
            return sum(1 for _ in csv.DictReader(fh))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def gpu_seconds(row: Row, settings: Settings, clips: int | None = None) -> float:
    """The estimated time of the row on one GPU with the paper-size model (module docstring)."""
    clips = clips or OFFICIAL_CLIPS[row.dataset]
    seconds, channels = AUDIO[row.dataset]
    scale = seconds * channels / 5.0
    forward = FORWARD_GFLOP_PER_5S * scale + (IMAGE_GFLOP if row.dataset == "audioset" else 0.0)
    rate = settings.gpu_tflops * 1000.0  # GFLOP/s
    if row.task != "crossval":
        return START_SECONDS + clips * forward / rate
    folds = folds_of(row, settings)
    epochs = settings.epochs or EPOCHS
    test = clips / FOLDS[row.dataset]
    train = (clips - test) * (1 - VAL_FRACTION)
    val = clips - test - train
    per_fold = epochs * (train * TRAIN_GFLOP_PER_5S * scale + val * forward) + test * forward
    return len(folds) * (START_SECONDS + per_fold / rate) + START_SECONDS  # + the cross-validation table


def human(seconds: float) -> str:
    if seconds < 90:
        return f"~{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"


# ------------------------------------------------------------------------------------------------- for the report
PLAN_FILE = Path("reproduce") / "plan.json"


def commands(runs: Path) -> dict[str, str]:
    """Each row's command: as `make reproduce` last planned it under `runs`, else with the default settings."""
    settings = Settings(runs=runs)
    defaults = {row.name: command(row, settings) for row in ROWS}
    try:
        planned = json.loads((runs / PLAN_FILE).read_text())["rows"]
        return {**defaults, **{r["row"]: r["command"] for r in planned}}
    except (OSError, ValueError, KeyError, TypeError):
        return defaults


def fit_command(run_dirs: list[Path]) -> str:
    """`audioclip fit` of the resolved config each training run wrote (its phase, data and overrides, all of it)."""
    first = f"audioclip fit --config {run_dirs[0] / 'config.yaml'}"
    return first if len(run_dirs) == 1 else f"{first}, and the same for {', '.join(d.name for d in run_dirs[1:])}"


def evaluate_command(path: Path, result: dict) -> str:
    """The `audioclip evaluate` command line that wrote the results file `path` (`result`, its content)."""
    root = result.get("root", "?")
    where = "--manifest" if result["dataset"] == "folder" and root.endswith((".csv", ".tsv")) else "--root"
    argv = ["audioclip", "evaluate", result["task"], "--dataset", result["dataset"], where, root, "--checkpoint",
            str(result.get("checkpoint", "?"))]  # fmt: skip
    if result["dataset"] in FOLDS and len(result.get("folds") or []) == 1:
        argv += ["--fold", str(result["folds"][0])]
    if result["task"] == "query" and "num_captions" not in result:
        argv += [a for r in result.get("results", []) for a in ("--pair", f"{r['query']}:{r['result']}")]
    argv += [a for t in result.get("templates", ["{}"]) if t != "{}" for a in ("--template", t)]
    return shlex.join([*argv, "--out", str(path.parent.parent), "--name", path.parent.name])
