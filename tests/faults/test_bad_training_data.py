"""Fault injection, bad data at training time: clips that read as silence, the wrong length or NaN/Inf, or cannot be
read at all, after the decoded cache was built (bad files found while building it: tests/data/test_bad_input.py).

ESC-50 items come from the int16 cache, so faults go into the cache (a zeroed row, a wrong length in its index) or
into its reader (NaN samples, a failing read), and reach the training loop through real DataLoader workers.
"""

import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import wandb
from wandb_offline import wandb_run

from audioclip.cli import main
from audioclip.data import BadFileError, ESC50DataModule
from audioclip.data.cache import CACHE_DIRNAME, CacheReader
from audioclip.data.synthetic import write_esc50
from audioclip.tasks.callbacks import BAD_FILES
from audioclip.tasks.cli import run_lightning_cli

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[2]
PROBLEMS = {
    "silence": "decoded to digital silence (every sample 0)",
    "wrong length": "decoded to the wrong length (0 samples; expected 1..220500)",
    "nan": "decoded to NaN/Inf samples",
    "unreadable": "could not be read from the decoded cache (injected read error)",
}


@pytest.fixture(scope="module")
def pristine_esc50(tmp_path_factory):
    root = write_esc50(tmp_path_factory.mktemp("pristine"), clips_per_class=4, classes=4, progress=False)
    ESC50DataModule(root, num_workers=0, progress=False).prepare_data()  # the cache, built once
    return root


@pytest.fixture
def esc50_root(pristine_esc50, tmp_path):
    # copy2 keeps the mtimes, so the copied cache stays valid and is not rebuilt
    return shutil.copytree(pristine_esc50, tmp_path / "esc50")


@pytest.fixture(autouse=True)
def _finish_wandb():
    yield
    wandb.finish()  # a run stopped by an exception leaves its W&B run open in this process


def datamodule(root: Path, **kwargs) -> ESC50DataModule:
    defaults = {"fold": 1, "batch_size": 2, "num_workers": 1, "val_fraction": 0.2, "progress": False}
    return ESC50DataModule(root, **{**defaults, **kwargs})


def corrupt_cache(root: Path, name: str, how: str) -> None:
    """Zero the clip's row of the cache array (silence) or set its length in the index to 0."""
    index_path = root / CACHE_DIRNAME / "esc50.json"
    index = json.loads(index_path.read_text())
    row = next(i for i, entry in enumerate(index["entries"]) if entry[0] == name)
    if how == "silence":
        array = np.load(root / CACHE_DIRNAME / "esc50.npy", mmap_mode="r+")
        array[row] = 0
        array.flush()
    else:
        index["entries"][row][2] = 0
        index_path.write_text(json.dumps(index))


class FaultyReader(CacheReader):
    """Reads one row as NaN samples or fails to read it; picklable into DataLoader workers."""

    def __init__(self, reader: CacheReader, row: int, how: str) -> None:
        self.__dict__.update(reader.__dict__)
        self.row, self.how = row, how

    def read(self, row: int, length: int) -> np.ndarray:
        if row != self.row:
            return super().read(row, length)
        if self.how == "unreadable":
            raise OSError("injected read error")
        return np.full((self.channels, length), np.nan, dtype=np.float32)


def faulty_datamodule(root: Path, how: str, **kwargs) -> tuple[ESC50DataModule, Path]:
    """A set-up DataModule whose training split holds one bad clip; returns it and the clip's path."""
    dm = datamodule(root, **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    name = dm.train_set.ids[3]
    if how in ("silence", "wrong length"):
        corrupt_cache(root, name, how)
        dm = datamodule(root, **kwargs)
        dm.setup("fit")
    else:
        dm.train_set.reader = FaultyReader(dm.train_set.reader, int(dm.train_set.rows[3]), how)
    return dm, root / "audio" / name


@pytest.mark.parametrize("how", PROBLEMS)
def test_bad_clip_in_a_loader_worker_stops_with_the_file_named(esc50_root, how):
    dm, path = faulty_datamodule(esc50_root, how)
    with pytest.raises(BadFileError) as error:
        list(dm.train_dataloader())
    assert str(error.value) == f"{path}: {PROBLEMS[how]}"
    assert error.value.path == path


@pytest.mark.parametrize("how", PROBLEMS)
def test_skip_replaces_a_bad_clip_and_names_it_in_the_batch(esc50_root, how):
    dm, path = faulty_datamodule(esc50_root, how, on_bad_file="skip")
    batches = list(dm.train_dataloader())
    assert all(len(batch["id"]) == 2 for batch in batches)  # replaced, so every batch stays full
    assert path.name not in [i for batch in batches for i in batch["id"]]
    assert [s for batch in batches for s in batch.get("skipped", [])] == [f"{path}: {PROBLEMS[how]}"]
    assert all(torch.isfinite(batch["audio"]).all() for batch in batches)


def _fit_args(root: Path, run: Path, *extra: str) -> list[str]:
    return [
        "fit", "--config", str(ROOT / "conf/trainer.yaml"), "--config", str(ROOT / "conf/demo.yaml"),
        "--data.init_args.root", str(root), "--data.init_args.num_workers", "1",
        "--data.init_args.persistent_workers", "false", "--data.init_args.batch_size", "2",
        "--data.init_args.progress", "false", "--model.init_args.num_classes", "4",
        "--trainer.default_root_dir", str(run), "--trainer.logger.init_args.save_dir", str(run),
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1",
        *extra,
    ]  # fmt: skip


def _train_clip(root: Path, index: int = 0) -> str:
    dm = datamodule(root)
    dm.setup("fit")
    return dm.train_set.ids[index]


def test_audioclip_fit_stops_at_a_silent_clip_with_one_line_naming_it(esc50_root, tmp_path, capsys):
    name = _train_clip(esc50_root)
    corrupt_cache(esc50_root, name, "silence")
    assert main(_fit_args(esc50_root, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert f"audioclip: error: {esc50_root / 'audio' / name}: {PROBLEMS['silence']}\n" in err
    assert "Traceback" not in err


def test_skipped_clips_are_counted_and_named_in_wandb_and_the_run_directory(esc50_root, tmp_path):
    silent, empty = _train_clip(esc50_root, 0), _train_clip(esc50_root, 2)  # not neighbours: one replacement each
    corrupt_cache(esc50_root, silent, "silence")
    corrupt_cache(esc50_root, empty, "wrong length")
    run = tmp_path / "run"
    cli = run_lightning_cli(_fit_args(esc50_root, run, "--data.init_args.on_bad_file", "skip"))
    assert cli.trainer.global_step == 4  # the epoch ran to its end with replacements
    lines = (run / BAD_FILES).read_text().splitlines()
    expected = {
        f"{esc50_root / 'audio' / silent}: {PROBLEMS['silence']}",
        f"{esc50_root / 'audio' / empty}: {PROBLEMS['wrong length']}",
    }
    assert {line.split("\t")[2] for line in lines} == expected and len(lines) == 2
    assert all(line.split("\t")[1] == "train" for line in lines)

    summary = _wandb_summary(run)
    assert summary["data/bad_files"] == 2
    assert set(summary["data/bad_file_names"]) == expected


def _wandb_summary(run: Path) -> dict:
    return wandb_run(run)["summary"]


POISON = textwrap.dedent('''
    import math

    import torch
    from lightning.pytorch.callbacks import Callback


    class PoisonBatch(Callback):
        """At the batch that makes global step `step + 1`, turns the batch's audio (`target="audio"`) or the
        audio-text logit scale (`target="logit_scale_at"`) into NaN; records whether that step changed the
        trainable weights or the BatchNorm statistics."""

        def __init__(self, step: int, target: str) -> None:
            self.step, self.target = step, target
            self.moved: bool | None = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == self.step:
                self.before = self.state(pl_module)
                poisoned = batch["audio"] if self.target == "audio" else getattr(pl_module.model, self.target).data
                poisoned.fill_(math.nan)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == self.step + 1:
                after = self.state(pl_module)
                self.moved = any(not torch.equal(after[name], value) for name, value in self.before.items())

        @staticmethod
        def state(module):
            weights = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
            return {**weights, **{n: b.clone() for n, b in module.named_buffers()}}
''')


@pytest.fixture
def poison(tmp_path, monkeypatch):
    (tmp_path / "poison.py").write_text(POISON)
    monkeypatch.syspath_prepend(str(tmp_path))

    def callback(target: str) -> list[str]:
        spec = {"class_path": "poison.PoisonBatch", "init_args": {"step": 1, "target": target}}
        return ["--trainer.callbacks+", json.dumps(spec)]

    return callback


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("logit_scale_at", "non-finite loss nan at global step 1 (batch 1: "),
        # a NaN input leaves this loss finite (the fbsp front end clamps the power) but not the gradients
        ("audio", "non-finite gradient at global step 1 (batch 1: "),
    ],
)
def test_nonfinite_loss_or_gradient_stops_the_run_naming_step_and_batch(
    target, message, esc50_root, tmp_path, poison, capsys
):
    args = _fit_args(esc50_root, tmp_path / "run", "--data.init_args.num_workers", "0", *poison(target))
    assert main(args) == 2
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("audioclip: error:")]
    assert line.startswith(f"audioclip: error: {message}") and line.endswith("skips such steps instead")
    assert "Traceback" not in err


def test_skip_nonfinite_loss_skips_the_step_and_counts_it(esc50_root, tmp_path, poison):
    args = _fit_args(esc50_root, tmp_path / "run", "--data.init_args.num_workers", "0", *poison("audio"))
    cli = run_lightning_cli([*args, "--nonfinite_guard.skip", "true"])
    (callback,) = [c for c in cli.trainer.callbacks if type(c).__name__ == "PoisonBatch"]
    assert callback.moved is False  # no update (no momentum, no weight decay, no BatchNorm statistics)
    (guard,) = [c for c in cli.trainer.callbacks if type(c).__name__ == "NonFiniteGuard"]
    assert guard.skipped_steps == 1 and cli.trainer.global_step == 4
    assert all(torch.isfinite(t).all() for t in cli.model.state_dict().values())
