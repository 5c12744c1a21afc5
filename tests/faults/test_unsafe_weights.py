"""Fault injection, unsafe or broken weight files at every entry point: `init_from`, `--ckpt_path` (resume),
`audioclip.load` and Lightning's own checkpoint reader. The loader itself (`read_state_dict`, `verify`) is tested
in tests/models/test_weight_loading.py; here each entry point gives one clear error and never runs pickled code."""

import os
from pathlib import Path

import pytest
import torch

import audioclip
from audioclip.cli import main
from audioclip.models import WeightsError, create_model
from audioclip.models.pretrained import TAGS
from audioclip.tasks.checkpoints import AtomicCheckpointIO

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[2]


class _RunsCode:
    """Unpickling this calls `os.system`: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def tiny_state():
    torch.manual_seed(0)
    return create_model("audioclip-tiny").state_dict()


@pytest.fixture
def files(tiny_state, tmp_path):
    """A truncated checkpoint, a file named like the official one with other contents, and a code-running one."""
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in tiny_state.items()}}, good)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    wrong_checksum = tmp_path / TAGS["full"].filename
    torch.save(tiny_state, wrong_checksum)
    code = tmp_path / "code.ckpt"
    torch.save({"state_dict": {"model.logit_scale": _RunsCode(tmp_path / "pwned")}, "epoch": 0}, code)
    return {"truncated": truncated, "wrong checksum": wrong_checksum, "code": code}


def _fit(tmp_path: Path, *extra: str) -> int:
    return main([
        "fit", "--config", str(ROOT / "conf/trainer.yaml"), "--config", str(ROOT / "conf/demo.yaml"),
        "--data.init_args.root", str(tmp_path / "no-data-needed"), "--trainer.default_root_dir", str(tmp_path / "run"),
        "--trainer.logger.init_args.save_dir", str(tmp_path / "run"), *extra,
    ])  # fmt: skip


def _error_line(err: str) -> str:
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("audioclip: error:")]
    return line


EXPECTED = {
    "truncated": "not a loadable weight file: a truncated or damaged zip archive",
    "wrong checksum": f"does not match {TAGS['full'].filename} (expected {TAGS['full'].sha256})",
    "code": "not a loadable weight file: refused as unsafe: loading it would import posix.system",
}


@pytest.mark.parametrize("fault", EXPECTED)
def test_init_from_a_bad_file_is_one_error(fault, files, tmp_path, capsys):
    assert _fit(tmp_path, "--model.init_args.init_from", str(files[fault])) == 2
    line = _error_line(capsys.readouterr().err)
    assert line.startswith(f"audioclip: error: init_from: {files[fault]}: ") and EXPECTED[fault] in line
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("fault", EXPECTED)
def test_audioclip_load_of_a_bad_file_is_one_error(fault, files, tmp_path):
    with pytest.raises(WeightsError) as error:
        audioclip.load(files[fault])
    assert EXPECTED[fault] in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    ("fault", "expected"),
    [("truncated", ": a truncated or damaged zip archive"), ("code", ": refused as unsafe: loading it would import")],
)
def test_resuming_from_a_bad_checkpoint_is_one_error_before_anything_runs(fault, expected, files, tmp_path, capsys):
    assert _fit(tmp_path, "--ckpt_path", str(files[fault])) == 2
    line = _error_line(capsys.readouterr().err)
    assert line.startswith(f"audioclip: error: ckpt_path: {files[fault]}: not a loadable checkpoint{expected}")
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "run").exists()


def test_lightning_checkpoint_reader_refuses_code(files, tmp_path):
    with pytest.raises(Exception, match="Weights only load failed"):
        AtomicCheckpointIO().load_checkpoint(files["code"])
    assert not (tmp_path / "pwned").exists()
