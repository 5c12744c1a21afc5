"""`make reproduce` / `audioclip reproduce`: every row of the paper that can run with what is on disk, one after the
other, then `make report`; `make reproduce-plan` (`--plan`) prints the plan and runs nothing.

    audioclip reproduce [--plan] [--rows 'cv-esc50-*' ...] [--runs runs] [--esc50 data/esc50] [--us8k data/us8k]
                        [--audioset data/audioset/eval/shards] [--init-full full] [--init-partial partial]
                        [--init-audio-head esrnxfbsp] [--folds 1 2] [--epochs N] [--protocol reference]

The rows, their commands and their cost are `audioclip.evaluation.reproduce_rows`; the paper's figures come from
`paper_tables.csv` (`audioclip.evaluation.report.paper_rows`). A row whose data or weights are missing is skipped
with what is missing and the command that gets it.

Running again continues where a run stopped: every command of a row (an evaluation; one fold's fine-tune; the
cross-validation table) leaves a done marker in `RUNS/reproduce/` once it has exited cleanly and its result file
exists, and a command with a marker (and the same arguments) is not run again; a fold whose training was cut off
continues from its last checkpoint (`RESUME=1`).
"""

from __future__ import annotations

import argparse
import fnmatch
import functools
import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from audioclip.evaluation.reproduce_rows import (
    DEFAULT_INITS,
    DEFAULT_ROOTS,
    PLAN_FILE,
    ROW_NAMES,
    ROWS,
    Row,
    Settings,
    Step,
    clips_on_disk,
    command,
    gpu_seconds,
    human,
    missing,
    row_for,
    steps,
)
from audioclip.outputs import write_text

STATE = "reproduce"  # RUNS/reproduce/: the plan, the done markers
# each line at once, in order with the output of the commands it runs
say = functools.partial(print)


@dataclass(frozen=True)
class Planned:
    row: Row
    paper: tuple[str, ...]  # the paper's figures it measures, in words
    command: str
    steps: tuple[Step, ...]
    missing: tuple[str, ...]
    seconds: float


# ------------------------------------------------------------------------------------------------- the plan
def _paper_figures() -> tuple[dict[str, list[str]], list[str]]:
    """The paper's figures by the row that measures them, and those no row measures (with why)."""
    from audioclip.evaluation.report import DATASETS, PAPER_VARIANTS, paper_rows

    short = {title: name for name, title in DATASETS.items()}
    by_row: dict[str, dict[str, list[str]]] = {}
    uncovered: list[str] = []
    for paper in paper_rows():
        variant = PAPER_VARIANTS.get(paper["model"])
        if variant is None:
            continue  # another system: quoted by the report, not reproduced
        row = row_for(short.get(paper["dataset"], ""), variant, paper["trained_on_target"] == "yes", paper["query"],
                      paper["result"], paper["metric"])  # fmt: skip
        figure = f"{paper['dataset']} {paper['query']} → {paper['result']} {paper['metric']} {paper['value_percent']}"
        if row is None:
            uncovered.append(f"Table {paper['table']}: {figure} ({paper['model']}): {_why_not(paper)}")
        else:
            by_row.setdefault(row.name, {}).setdefault(figure, []).append(paper["table"])
    words = {name: [f"Table{'s' if len(t) > 1 else ''} {', '.join(t)}: {f}" for f, t in figures.items()]
             for name, figures in by_row.items()}  # fmt: skip
    return words, uncovered


def _why_not(paper: dict) -> str:
    if paper["dataset"] == "ImageNet":
        return "needs an ImageNet evaluation the report can recognise (docs/evaluation.md)"
    if paper["dataset"] == "AudioSet":
        return "the standalone head's AudioSet mAP comes from `make pretrain-audio` (30 epochs of AudioSet)"
    return "no command of make reproduce measures it"


def plan(settings: Settings, names: Sequence[str] = ROW_NAMES) -> tuple[list[Planned], list[str]]:
    """The rows named, in the table's order, with their figures, commands, what they miss and their cost; and the
    paper figures that no row measures."""
    figures, uncovered = _paper_figures()
    clips = {d: clips_on_disk(d, Path(root)) for d, root in settings.roots.items()}
    planned = [
        Planned(row, tuple(figures.get(row.name, ())), command(row, settings), tuple(steps(row, settings)),
                tuple(missing(row, settings)), gpu_seconds(row, settings, clips[row.dataset]))
        for row in ROWS if row.name in names
    ]  # fmt: skip
    return planned, uncovered


def print_plan(planned: list[Planned], uncovered: list[str], settings: Settings) -> None:
    state = settings.runs / STATE
    say(f"make reproduce: {len(planned)} rows; results under {settings.runs}/. Time: an estimate for one GPU with the "
        f"paper-size model at {settings.gpu_tflops:g} TFLOP/s sustained (docs/reproducing.md).")  # fmt: skip
    for i, p in enumerate(planned, 1):
        status = (f"missing {'; '.join(p.missing)}" if p.missing else "done (not redone)" if _row_done(state, p)
                  else "can run now" + _synthetic(p, settings))  # fmt: skip
        say(f"\n[{i}/{len(planned)}] {p.row.name}: {p.row.title}")
        for figure in p.paper:
            say(f"    paper:   {figure}")
        say(f"    command: {p.command}")
        say(f"    status:  {status}")
        say(f"    time:    {human(p.seconds)} on one GPU")
    done = [p for p in planned if not p.missing and _row_done(state, p)]
    runnable = [p for p in planned if not p.missing and p not in done]
    say(f"\n{len(runnable)} of {len(planned)} rows can run now ({human(sum(p.seconds for p in runnable))} on one GPU), "
        f"{len(done)} done, {len(planned) - len(runnable) - len(done)} missing data or weights; then `make report` "
        f"writes {settings.runs / 'REPORT.md'}")  # fmt: skip
    if uncovered:
        say("\nPaper figures that make reproduce does not measure:")
        for line in uncovered:
            say(f"    {line}")


def _synthetic(p: Planned, settings: Settings) -> str:
    from audioclip.data.provenance import data_kind

    if data_kind(settings.roots[p.row.dataset]) != "synthetic":
        return ""
    return " (synthetic data: the report lists its figures under Other runs, never beside the paper's)"


# ------------------------------------------------------------------------------------------------- done markers
def _marker(state: Path, row: str, step: str | None = None) -> Path:
    return state / "done" / (f"{row}.json" if step is None else f"{row}/{step}.json")


def _marked(path: Path, identity: object) -> bool:
    try:
        return json.loads(path.read_text()).get("commands") == identity
    except (OSError, ValueError, AttributeError):
        return False


def _step_done(state: Path, row: Row, step: Step) -> bool:
    return step.result.is_file() and _marked(_marker(state, row.name, step.name), step.identity())


def _row_done(state: Path, p: Planned) -> bool:
    identity = [s.identity() for s in p.steps]
    return all(s.result.is_file() for s in p.steps) and _marked(_marker(state, p.row.name), identity)


def _mark(path: Path, identity: object, result: Path) -> None:
    record = {"commands": identity, "result": str(result), "finished": datetime.now(UTC).isoformat(timespec="seconds")}
    write_text(path, json.dumps(record, indent=2) + "\n", "--runs (make reproduce: RUNS=)")


# ------------------------------------------------------------------------------------------------- running
class Stopped(Exception):
    """SIGTERM or Ctrl-C while a command ran: the command was stopped, and the run ends."""


def _child_environment() -> dict[str, str]:
    """The outer make's command-line variables (MAKEFLAGS) must not reach the phase targets: each gets exactly the
    variables its row passes."""
    return {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS")}


def _run(argv: Sequence[str]) -> int:
    """Run one command; on SIGTERM or Ctrl-C stop it (SIGTERM, then SIGKILL after 60 s) and raise Stopped."""
    child = subprocess.Popen(list(argv), env=_child_environment())
    previous = signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        return child.wait()
    except (Stopped, KeyboardInterrupt):
        child.terminate()
        try:
            child.wait(60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        raise Stopped from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_stopped(signum: int, frame: object) -> None:
    raise Stopped


def run_row(state: Path, p: Planned) -> bool:
    """Run the row's commands that are not done yet; True when every one has finished and left its result."""
    ran = False
    for step in p.steps:
        if _step_done(state, p.row, step) and not (step.summary and ran):
            say(f"    {step.name}: done earlier ({step.result}), not redone")
            continue
        ran = True
        started = state / "started" / p.row.name / step.name
        resume = step.resumable and started.is_file()  # this plan started it: continue from its last checkpoint
        started.parent.mkdir(parents=True, exist_ok=True)
        started.touch()
        say(f"    {step.name}{' (continued)' if resume else ''}: {shlex.join(step.identity())}")
        code = _run([*step.argv, *(["RESUME=1"] if resume else [])])
        if code != 0 or not step.result.is_file():
            why = f"exit status {code}" if code != 0 else f"no {step.result}"
            say(f"    {step.name}: failed ({why}); the row stops here")
            return False
        _mark(_marker(state, p.row.name, step.name), step.identity(), step.result)
    _mark(_marker(state, p.row.name), [s.identity() for s in p.steps], p.steps[-1].result)
    return True


def _check_makefile() -> None:
    makefile = Path("Makefile")
    if not makefile.is_file() or "cv-esc50:" not in makefile.read_text():
        raise ValueError(f"{Path.cwd()}: no AudioCLIP-Lightning Makefile here; run `make reproduce` (or `audioclip "
                         "reproduce`) in the repository root: the rows call its phase targets")  # fmt: skip


def _write_plan(state: Path, planned: list[Planned], settings: Settings) -> None:
    record = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": [{"row": p.row.name, "title": p.row.title, "paper": list(p.paper), "command": p.command,
                  "missing": list(p.missing), "gpu_seconds_estimate": round(p.seconds)} for p in planned],
        "gpu_tflops": settings.gpu_tflops,
    }  # fmt: skip
    write_text(state.parent / PLAN_FILE, json.dumps(record, indent=2) + "\n", "--runs (make reproduce: RUNS=)")


def reproduce(settings: Settings, names: Sequence[str] = ROW_NAMES) -> int:
    """Run every row named that can run and is not done, then the report; 0 when no row failed."""
    _check_makefile()
    planned, _ = plan(settings, names)
    state = settings.runs / STATE
    _write_plan(state, planned, settings)
    failed, skipped = [], []
    for i, p in enumerate(planned, 1):
        head = f"[{i}/{len(planned)}] {p.row.name}"
        if p.missing:
            say(f"{head}: skipped, missing {'; '.join(p.missing)}")
            skipped.append(p.row.name)
        elif _row_done(state, p):
            say(f"{head}: done earlier ({p.steps[-1].result}), not redone")
        else:
            say(f"{head}: {p.row.title} ({human(p.seconds)} on one GPU)\n    {p.command}")
            if not run_row(state, p):
                failed.append(p.row.name)
    if any(settings.runs.rglob("test_metrics.json")) or (settings.runs / "eval").is_dir():
        say("make report")
        venv = Path(sys.executable).parent.parent
        if _run(["make", "--no-print-directory", "report", f"RUNS={settings.runs}", f"VENV={venv}"]) != 0:
            failed.append("report")
    else:
        say(f"no results under {settings.runs} yet: no report")
    done = len(planned) - len(skipped) - len(failed)
    say(f"make reproduce: {done} rows done, {len(skipped)} skipped (missing data or weights), "
        f"{len(failed)} failed{': ' + ', '.join(failed) if failed else ''}")  # fmt: skip
    return 1 if failed else 0


# ------------------------------------------------------------------------------------------------- command line
def _select(patterns: Sequence[str] | None) -> list[str]:
    if not patterns:
        return list(ROW_NAMES)
    chosen = [n for n in ROW_NAMES if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    for pattern in patterns:
        if not fnmatch.filter(ROW_NAMES, pattern):
            raise ValueError(f"--rows {pattern!r} names no row; the rows: {', '.join(ROW_NAMES)}")
    return chosen


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audioclip reproduce", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--plan", action="store_true", help="print the plan (rows, figures, commands, what is "
                        "missing, time) and run nothing")  # fmt: skip
    parser.add_argument("--rows", nargs="+", metavar="NAME", help="only these rows (shell patterns: 'cv-*')")
    parser.add_argument("--runs", default="runs", help="where results go (default runs)")
    for name, root in DEFAULT_ROOTS.items():
        parser.add_argument(f"--{name}", default=root, help=f"the {name} root (default {root})")
    for variant, init in DEFAULT_INITS.items():
        parser.add_argument(f"--init-{variant}", default=init,
                            help=f"the {variant} weights: a tag, a checkpoint or a run folder (default {init})")
    parser.add_argument("--folds", nargs="+", type=int, default=[], help="only these folds of each cross-validation")
    parser.add_argument("--epochs", type=int, help="epochs of every fine-tune (default: the phases' 50)")
    parser.add_argument("--protocol", choices=["honest", "reference"], help="the fine-tunes' checkpoint selection "
                        "(default honest; reference: on the test fold, as the paper's trainer)")  # fmt: skip
    parser.add_argument("--tiny", action="store_true", help="the tiny model variants (tests and demos)")
    parser.add_argument("--fit-args", default="", help="more arguments of every fine-tune (make ARGS=)")
    parser.add_argument("--eval-args", default="", help="more arguments of every `audioclip evaluate`")
    parser.add_argument("--gpu-tflops", type=float, default=Settings().gpu_tflops,
                        help="the sustained rate the time estimates assume (docs/reproducing.md)")  # fmt: skip
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    if any(k < 1 for k in args.folds):
        raise ValueError(f"--folds: fold numbers start at 1, got {args.folds}")
    return Settings(
        runs=Path(args.runs),
        roots={name: getattr(args, name) for name in DEFAULT_ROOTS},
        inits={variant: getattr(args, f"init_{variant.replace('-', '_')}") for variant in DEFAULT_INITS},
        folds=tuple(args.folds),
        epochs=args.epochs,
        tiny=args.tiny,
        protocol=args.protocol,
        fit_args=args.fit_args,
        eval_args=args.eval_args,
        gpu_tflops=args.gpu_tflops,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings, names = settings_from(args), _select(args.rows)
    if args.plan:
        print_plan(*plan(settings, names), settings)
        return 0
    try:
        return reproduce(settings, names)
    except Stopped:
        print("make reproduce: stopped; run it again to continue where it stopped", file=sys.stderr)
        return 143


if __name__ == "__main__":
    raise SystemExit(main())
