"""A file that is not a checkpoint at all, given where weights or a checkpoint are expected (`init_from`,
`--ckpt_path`, `classify --checkpoint`): one line naming the file and what it is, none of torch's internals."""

import zipfile
from pathlib import Path

import pytest
import torch
from test_unsafe_weights import _fit  # `audioclip fit` on the demo config, as the weight-file faults run it

import audioclip.tasks.cli  # noqa: F401  Lightning's log handlers bind to the real stderr, not one test's capture
from audioclip.cli import main

pytestmark = pytest.mark.faults

TORCH_WORDS = ("PytorchStreamReader", "enforce fail", "weights_only` set to `False", "KeyError", "miniz", "mmap")


def _text(path: Path) -> Path:
    path.write_text("epoch,loss\n1,0.53\n")
    return path


def _zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes/readme.txt", "not weights")
    return path


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _truncated(path: Path) -> Path:
    torch.save({"state_dict": {"w": torch.zeros(64, 64)}}, path)
    path.write_bytes(path.read_bytes()[:2000])
    return path


# what each file is, in the words the error must use
FILES = {
    "text": (_text, "a text file (it starts with 'epoch,loss')"),
    "zip": (_zip, "a zip archive that torch.save did not write (no data.pkl among its 1 entries)"),
    "empty": (_empty, "the file is empty"),
    "truncated": (_truncated, "a truncated or damaged zip archive"),
}


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("audioclip: error:")]
    assert not any(word in line for word in TORCH_WORDS), line
    return line


@pytest.mark.parametrize("kind", FILES)
def test_resuming_from_a_file_that_is_not_a_checkpoint_says_what_it_is(kind, tmp_path, capsys):
    make, what = FILES[kind]
    path = make(tmp_path / "last.ckpt")
    assert _fit(tmp_path, "--ckpt_path", str(path)) == 2
    line = _one_line(capsys)
    assert line.startswith(f"audioclip: error: ckpt_path: {path}: not a loadable checkpoint: {what}")
    assert "expected a checkpoint that `audioclip fit` wrote" in line


@pytest.mark.parametrize("kind", ["text", "zip"])
def test_init_from_a_file_that_is_not_weights_says_what_it_is(kind, tmp_path, capsys):
    make, what = FILES[kind]
    path = make(tmp_path / "weights.pt")
    assert _fit(tmp_path, "--model.init_args.init_from", str(path)) == 2
    line = _one_line(capsys)
    assert line.startswith(f"audioclip: error: init_from: {path}: not a loadable weight file: {what}")
    assert "expected a state dict, a Lightning checkpoint or a TorchScript archive" in line


@pytest.mark.parametrize("kind", ["text", "zip", "empty"])
def test_classify_with_a_checkpoint_that_is_not_one_says_what_it_is(kind, tmp_path, capsys):
    make, what = FILES[kind]
    path = make(tmp_path / "model.ckpt")
    assert main(["classify", str(tmp_path / "clip.wav"), "--labels", "dog,cat", "--checkpoint", str(path)]) == 2
    assert (
        _one_line(capsys) == f"audioclip: error: {path}: not a loadable weight file: {what}; expected a state "
        "dict, a Lightning checkpoint or a TorchScript archive"
    )
