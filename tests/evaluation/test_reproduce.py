"""`make reproduce` / `make reproduce-plan`: every paper row that can run with what is on disk, skipped rows saying
what is missing, REPORT.md with the command column, and a run killed mid-way that finishes without redoing rows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from audioclip.cli import main
from audioclip.data.synthetic import write_esc50
from audioclip.evaluation.reproduce_rows import ROWS, Settings, gpu_seconds
from audioclip.models import create_model

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent


@pytest.fixture(scope="module")
def on_disk(tmp_path_factory):
    """A synthetic ESC-50 (4 classes x 5 clips), a tiny AudioCLIP as the `full` weights and a tiny audio head as the
    `esrnxfbsp` weights; no UrbanSound8K, no AudioSet, no `partial` weights (an empty weights cache)."""
    base = tmp_path_factory.mktemp("reproduce")
    esc50 = write_esc50(base / "esc50", clips_per_class=5, classes=4, seed=0, progress=False)
    torch.manual_seed(0)
    torch.save(create_model("audioclip-tiny").state_dict(), base / "full-tiny.pt")
    torch.save(create_model("esresnext-fbsp-tiny").state_dict(), base / "head-tiny.pt")
    (base / "cache").mkdir()
    return base, esc50


def _options(base: Path, esc50: Path) -> list[str]:
    return ["--esc50", str(esc50), "--us8k", str(base / "no-us8k"), "--audioset", str(base / "no-audioset"),
            "--init-full", str(base / "full-tiny.pt"), "--init-audio-head", str(base / "head-tiny.pt")]  # fmt: skip


def test_the_plan_shows_each_rows_paper_figure_command_status_and_time(on_disk, tmp_path, capsys, monkeypatch):
    base, esc50 = on_disk
    monkeypatch.setenv("AUDIOCLIP_CACHE", str(base / "cache"))
    runs = tmp_path / "runs"
    assert main(["reproduce", "--plan", "--runs", str(runs), *_options(base, esc50)]) == 0
    shown = capsys.readouterr().out
    blocks = {b.split(":", 1)[0].split("] ")[1]: b for b in shown.split("\n\n") if b.startswith("[")}
    assert set(blocks) == {row.name for row in ROWS}
    zeroshot = blocks["zeroshot-esc50-full"].splitlines()
    assert zeroshot[1:] == [
        "    paper:   Table 2: ESC-50 audio → text accuracy 68.60",
        f"    command: audioclip evaluate zeroshot --dataset esc50 --root {esc50} --checkpoint {base}/full-tiny.pt "
        f"--out {runs}/eval --name zeroshot-esc50-full",
        "    status:  can run now (synthetic data: the report lists its figures under Other runs, never beside the "
        "paper's)",
        "    time:    ~30 s on one GPU",  # 20 clips: the 30-s start-up, and 20 x 28.7 GFLOP at 25 TFLOP/s (0.02 s)
    ]
    assert "    paper:   Tables 1, 3: ESC-50 audio → labels accuracy 95.90" in blocks["cv-esc50-audio-head"]
    assert "    status:  can run now" in blocks["cv-esc50-audio-head"]
    partial = blocks["cv-esc50-partial"]
    assert f"missing weights 'partial' ({base}/cache/AudioCLIP-Partial-Training.pt): make weights" in partial
    assert f"command: make cv-esc50 INIT=partial DATA={esc50} RUNS={runs}/from-partial" in partial
    us8k = blocks["cv-us8k-full"]
    assert f"missing UrbanSound8K at {base}/no-us8k (no metadata/UrbanSound8K.csv): make data-us8k" in us8k
    assert "time:    ~5.5 h on one GPU" in us8k  # the official 8,732 clips when none are on disk
    assert "no index.json): pack the official eval_segments.csv" in blocks["query-audioset-full"]
    # zero-shot and querying on ESC-50 (30 s each) and its two cross-validations (6 starts and ~2.4 s of training
    # per fold: 14.4 clips x 50 epochs x 82.8 GFLOP at 25 TFLOP/s, each ~3.2 min): ~7 min
    assert "\n4 of 18 rows can run now (~7 min on one GPU), 0 done, 14 missing data or weights;" in shown
    assert "Table 2: ImageNet image → text accuracy 21.79 (AudioCLIP full): needs an ImageNet evaluation" in shown
    assert not runs.exists()  # a plan runs and writes nothing


def test_the_estimate_is_the_matrix_work_at_the_assumed_rate():
    esc50_cv = next(r for r in ROWS if r.name == "cv-esc50-full")
    # per 5-s mono clip (docs/performance.md, batch of 8): training 662.7 / 8 GFLOP, forward (203 + 26.35) / 8;
    # a fold: 1,440 clips trained and 160 validated for 50 epochs, 400 tested; 30 s to start each fold and the table
    train, forward = 662.7 / 8, 229.35 / 8
    fold = 30 + (50 * (1440 * train + 160 * forward) + 400 * forward) / 25_000
    assert gpu_seconds(esc50_cv, Settings()) == pytest.approx(5 * fold + 30)
    assert gpu_seconds(esc50_cv, Settings(gpu_tflops=50, folds=(1,))) == pytest.approx(30 + (fold - 30) / 2 + 30)


def test_a_row_done_with_other_settings_is_not_taken_as_done(on_disk, tmp_path):
    from audioclip.evaluation.reproduce import _mark, _marker, _row_done, plan

    base, esc50 = on_disk
    settings = Settings(runs=tmp_path, roots={"esc50": str(esc50), "us8k": "x", "audioset": "x"},
                        inits={"full": str(base / "full-tiny.pt"), "partial": "partial", "audio-head": "esrnxfbsp"})
    (row,) = plan(settings, ["zeroshot-esc50-full"])[0]
    (step,) = row.steps
    step.result.parent.mkdir(parents=True)
    step.result.write_text("{}")
    _mark(_marker(tmp_path / "reproduce", row.row.name), [s.identity() for s in row.steps], step.result)
    assert _row_done(tmp_path / "reproduce", row)
    other = Settings(runs=tmp_path, roots=settings.roots, inits={**settings.inits, "full": "full"})
    (changed,) = plan(other, ["zeroshot-esc50-full"])[0]
    assert not _row_done(tmp_path / "reproduce", changed)  # other weights: the row runs again
    step.result.unlink()
    assert not _row_done(tmp_path / "reproduce", row)  # the result is gone: the row runs again


def test_bad_row_names_and_a_run_outside_the_repository_are_one_line(tmp_path, capsys, monkeypatch):
    assert main(["reproduce", "--plan", "--rows", "cv-esc5O-*"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("audioclip: error: --rows 'cv-esc5O-*' names no row; the rows: zeroshot-esc50-full, ")
    assert len(err.splitlines()) == 1
    monkeypatch.chdir(tmp_path)
    assert main(["reproduce", "--rows", "zeroshot-esc50-full", "--runs", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"audioclip: error: {tmp_path}: no AudioCLIP-Lightning Makefile here; run `make reproduce` (or "
                   "`audioclip reproduce`) in the repository root: the rows call its phase targets")  # fmt: skip


def _make(*args: str, env: dict, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(["make", "--no-print-directory", f"VENV={VENV}", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)  # fmt: skip


def test_reproduce_plan_passes_the_make_variables_through(on_disk):
    base, esc50 = on_disk
    env = {**os.environ, "AUDIOCLIP_CACHE": str(base / "cache")}
    # one-word ARGS: argparse would take "--trainer.max_epochs=1" for an option of its own unless passed as a value
    done = _make("reproduce-plan", "ROWS=cv-esc50-* zeroshot-esc50-full", "FOLDS=2 4", f"ESC50={esc50}",
                 "ARGS=--trainer.max_epochs=1", "EVAL_ARGS=--batch-size=8", env=env)  # fmt: skip
    out, _ = done.communicate(timeout=300)
    assert done.returncode == 0, out[-3000:]
    assert "make reproduce: 4 rows" in out
    assert f"command: make cv-esc50 INIT=full DATA={esc50} 'FOLDS=2 4' ARGS=--trainer.max_epochs=1" in out
    assert (f"command: audioclip evaluate zeroshot --dataset esc50 --root {esc50} --checkpoint full --out runs/eval "
            "--name zeroshot-esc50-full --batch-size=8") in out  # fmt: skip


# the rows of the end-to-end run: two that can run (a zero-shot evaluation first, then a cross-validation: the
# audio head's is the same runner over another phase target), two that cannot
RUN_ROWS = "zeroshot-esc50-full cv-esc50-full zeroshot-us8k-full cv-esc50-partial"
FIT_ARGS = ("--trainer.accelerator cpu --trainer.devices 1 --data.init_args.batch_size 4 "
            "--data.init_args.num_workers 0 --trainer.enable_progress_bar false")  # fmt: skip


def test_make_reproduce_killed_after_its_first_row_finishes_without_redoing_it(on_disk, tmp_path):
    base, esc50 = on_disk
    runs = tmp_path / "runs"
    # W&B disabled: the runs' own W&B logging is tested elsewhere, and here it would only cost time
    env = {**os.environ, "AUDIOCLIP_CACHE": str(base / "cache"), "WANDB_MODE": "disabled"}
    args = (f"RUNS={runs}", f"ESC50={esc50}", f"US8K={base / 'no-us8k'}", f"ROWS={RUN_ROWS}", "FOLDS=1",
            f"ARGS={FIT_ARGS}", "EVAL_ARGS=--device cpu --batch-size 8",
            f"REPRODUCE_ARGS=--tiny --epochs 1 --init-full {base / 'full-tiny.pt'} "
            f"--init-audio-head {base / 'head-tiny.pt'}")  # fmt: skip
    first_row = runs / "reproduce" / "done" / "zeroshot-esc50-full.json"
    killed = _make("reproduce", *args, env=env, start_new_session=True)  # its own process group
    deadline = time.monotonic() + 300
    while not first_row.is_file() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert first_row.is_file(), killed.communicate()[0][-3000:]
    os.killpg(killed.pid, signal.SIGKILL)  # make, audioclip reproduce and whatever it runs: all at once
    killed.communicate(timeout=60)
    result = runs / "eval" / "zeroshot-esc50-full" / "results.json"
    written = result.stat().st_mtime_ns
    assert not (runs / "REPORT.md").exists()

    again = _make("reproduce", *args, env=env)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out[-3000:]
    assert result.stat().st_mtime_ns == written  # the finished row was not run again
    assert f"[1/4] zeroshot-esc50-full: done earlier ({result}), not redone" in out
    assert f"[2/4] zeroshot-us8k-full: skipped, missing UrbanSound8K at {base / 'no-us8k'}" in out
    assert "[4/4] cv-esc50-partial: skipped, missing weights 'partial'" in out
    assert "make reproduce: 2 rows done, 2 skipped (missing data or weights), 0 failed" in out
    # the runnable rows ran to their results
    assert json.loads((runs / "finetune-esc50" / "fold1" / "test_metrics.json").read_text())["test_fold"] == 1
    assert (runs / "finetune-esc50" / "cv.csv").read_text().startswith("fold,test_acc\n1,")
    report = (runs / "REPORT.md").read_text()
    assert "| protocol | source | command |" in report
    assert (f"| ESC-50 | audio → text | AudioCLIP full | zero-shot | accuracy | 68.60 | not run | — | — | — | "
            f"`audioclip evaluate zeroshot --dataset esc50 --root {esc50} --checkpoint {base}/full-tiny.pt --out "
            f"{runs}/eval --name zeroshot-esc50-full --device cpu --batch-size 8` |") in report  # synthetic: no figure


def _reproduce(runs: Path, esc50: Path, init: Path, env: dict) -> subprocess.Popen:
    """`audioclip reproduce` of the zero-shot ESC-50 row alone, in its own process group."""
    argv = [sys.executable, "-m", "audioclip.cli", "reproduce", "--rows", "zeroshot-esc50-full", "--runs", str(runs),
            "--esc50", str(esc50), "--init-full", str(init), "--eval-args=--device cpu"]  # fmt: skip
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip


def _processes_naming(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_a_failing_row_is_named_and_leaves_no_done_marker(on_disk, tmp_path):
    base, esc50 = on_disk
    not_weights = tmp_path / "not-weights.pt"
    not_weights.write_text("not a checkpoint")
    done = _reproduce(tmp_path / "runs", esc50, not_weights, {**os.environ, "WANDB_MODE": "disabled"})
    out, err = done.communicate(timeout=300)
    assert done.returncode == 1, err[-2000:]
    assert f"audioclip: error: {not_weights}: not a loadable weight file" in err  # the evaluation's own line
    assert "    evaluate: failed (exit status 2); the row stops here" in out
    assert out.rstrip().endswith("0 rows done, 0 skipped (missing data or weights), 1 failed: zeroshot-esc50-full")
    assert not (tmp_path / "runs" / "reproduce" / "done").exists()


def test_sigterm_stops_the_running_command_and_says_how_to_continue(on_disk, tmp_path):
    base, esc50 = on_disk
    runs = tmp_path / "runs"
    running = _reproduce(runs, esc50, base / "full-tiny.pt", {**os.environ, "WANDB_MODE": "disabled"})
    started = runs / "reproduce" / "started" / "zeroshot-esc50-full" / "evaluate"
    deadline = time.monotonic() + 120
    while not started.is_file() and running.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert started.is_file(), running.communicate()[1][-2000:]
    time.sleep(1)  # the evaluation has started
    running.send_signal(signal.SIGTERM)  # the runner alone, not its process group
    out, err = running.communicate(timeout=120)
    assert running.returncode == 143
    assert err.strip().splitlines()[-1] == "make reproduce: stopped; run it again to continue where it stopped"
    assert not _processes_naming(str(runs))  # the evaluation it ran was stopped with it
    assert not (runs / "reproduce" / "done").exists()


def test_a_row_given_more_folds_runs_only_the_new_fold_and_the_table_again(tmp_path):
    """The runner with plain shell commands for steps: fold k writes its result and counts its runs; the table lists
    the fold results it finds (as `audioclip crossval` does)."""
    from audioclip.evaluation.reproduce import Planned, run_row
    from audioclip.evaluation.reproduce_rows import Step

    row = next(r for r in ROWS if r.name == "cv-esc50-full")

    def fold(k: int) -> Step:
        script = f"echo run >> {tmp_path}/fold{k}.runs && echo {k} > {tmp_path}/fold{k}.json"
        return Step(f"fold{k}", ("sh", "-c", script), tmp_path / f"fold{k}.json", resumable=True)

    table = Step("crossval", ("sh", "-c", f"cat {tmp_path}/fold*.json > {tmp_path}/cv.csv"), tmp_path / "cv.csv",
                 summary=True)  # fmt: skip
    state = tmp_path / "reproduce"
    assert run_row(state, Planned(row, (), "", (fold(1), table), (), 0.0))
    assert (tmp_path / "cv.csv").read_text() == "1\n"
    assert run_row(state, Planned(row, (), "", (fold(1), fold(2), table), (), 0.0))
    assert (tmp_path / "fold1.runs").read_text() == "run\n"  # fold 1 was not trained again
    assert (tmp_path / "cv.csv").read_text() == "1\n2\n"  # the table is of both folds
