"""Fault injection, bad configuration: each mistake stops `audioclip fit` before any data is read (the dataset's
decoded cache is never built) and before a W&B run starts, with one line that names the setting."""

from pathlib import Path

import pytest
import torch

from audioclip.cli import main
from audioclip.data.cache import CACHE_DIRNAME
from audioclip.data.synthetic import write_esc50
from audioclip.models import create_model

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def esc50_root(tmp_path_factory):
    return write_esc50(tmp_path_factory.mktemp("esc50"), clips_per_class=2, classes=2, progress=False)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A Lightning checkpoint of the fine-tuning phase with the tiny AudioCLIP."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    state = {f"model.{k}": v for k, v in create_model("audioclip-tiny").state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3, "global_step": 12}, path)
    return path


def _run(esc50_root: Path, run: Path, *extra: str, config: str = "demo.yaml") -> int:
    args = [
        "fit", "--config", str(ROOT / "conf/trainer.yaml"), "--config", str(ROOT / "conf" / config),
        "--data.init_args.root", str(esc50_root), "--trainer.default_root_dir", str(run),
        "--trainer.logger.init_args.save_dir", str(run), *extra,
    ]  # fmt: skip
    try:
        return main(args)
    except SystemExit as done:  # parse errors exit from the parser itself
        return done.code


def _bad_yaml(tmp_path: Path) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  init_args:\n    fold_k: 3\n")
    return str(path)


CASES = {
    "unknown key": (["--model.init_args.learning_rat", "0.1"], "model: Option 'learning_rat' is not accepted"),
    "unknown key in a file": (["--config", "{bad_yaml}"], "data: Option 'fold_k' is not accepted"),
    "misspelled trainer key": (["--trainer.max_epoch", "3"], "unrecognized arguments: --trainer.max_epoch 3"),
    "wrong type": (["--data.init_args.batch_size", "abc"], "data.batch_size: Expected a <class 'int'>. Got value: abc"),
    "fold out of range": (["--data.init_args.fold", "6"], "fold must be in 1..5 (ESC-50 has 5 official folds), got 6"),
    "batch size does not divide": (
        ["--trainer.accelerator", "cpu", "--trainer.devices", "3", "--data.init_args.batch_size", "16"],
        "data.batch_size: batch_size=16 is the global batch size and must be divisible by the number of devices "
        "(world size 3)",
    ),
    "init_from missing": (["--model.init_args.init_from", "{tmp}/nowhere.ckpt"], "init_from: {tmp}/nowhere.ckpt: no"),
    "ckpt_path missing": (["--ckpt_path", "{tmp}/nowhere.ckpt"], "ckpt_path: {tmp}/nowhere.ckpt: no such checkpoint"),
    "unknown signal": (["--save_on_signal.signals", "[SIGFOO]"], "save_on_signal.signals: unknown signal 'SIGFOO'"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_setting_fails_before_any_data_is_read_with_one_line(case, esc50_root, tmp_path, capsys):
    args, expected = CASES[case]
    args = [a.format(tmp=tmp_path, bad_yaml=_bad_yaml(tmp_path)) for a in args]
    code = _run(esc50_root, tmp_path / "run", *args)
    err = capsys.readouterr().err
    assert code == 2
    (line,) = [line for line in err.splitlines() if "error" in line.lower()]
    assert line.startswith(f"audioclip: error: {expected.format(tmp=tmp_path)}"), line
    assert "Traceback" not in err
    assert not (esc50_root / CACHE_DIRNAME).exists()
    assert not (tmp_path / "run" / "wandb").exists()


def test_tiny_model_checkpoint_into_the_paper_size_model_is_refused(esc50_root, tiny_checkpoint, tmp_path, capsys):
    init = ["--model.init_args.init_from", str(tiny_checkpoint)]
    code = _run(esc50_root, tmp_path / "run", *init, config="finetune-esc50.yaml")
    err = capsys.readouterr().err
    assert code == 2
    (line,) = [line for line in err.splitlines() if "error" in line.lower()]
    assert line.startswith(f"audioclip: error: init_from: {tiny_checkpoint} does not fit AudioCLIP: ")
    assert "shape mismatch" in line and line.endswith("(model: audioclip)")
    assert not (esc50_root / CACHE_DIRNAME).exists()


def test_standalone_audio_checkpoint_into_audioclip_fine_tuning_is_accepted(esc50_root, tmp_path):
    """By design, not a fault: a pretrain-audio checkpoint initialises AudioCLIP's audio head (`fc` excepted)."""
    from audioclip.tasks import FinetuneModule

    path = tmp_path / "esrnxfbsp-tiny.pt"
    torch.save(create_model("esresnext-fbsp-tiny").state_dict(), path)
    module = FinetuneModule(model="audioclip-tiny", init_from=str(path), num_classes=2)
    assert torch.equal(module.model.audio.conv1.weight, torch.load(path, weights_only=True)["conv1.weight"])
