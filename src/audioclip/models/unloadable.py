"""Why a file given as weights or as a checkpoint could not be read, in plain words, from the file itself.

torch's own errors describe its internals (`PytorchStreamReader failed reading zip archive`, `[enforce fail at
inline_container.cc]`, a bare `KeyError: 101` for a text file) or advise re-running with `weights_only=False`, which
would run the file's code. What a user needs is what the file is: empty, text, a zip that torch did not write, cut
short, or a pickle that would import code. The file is looked at (its first bytes, its zip directory); torch's error
is only used to tell a refused pickle from a damaged file.

Used by `models.pretrained.read_state_dict` (`init_from`, `audioclip.load`, `--checkpoint`) and
`reliability.read_checkpoint` (`--ckpt_path`).
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTOCOL = b"\x80"  # pickle protocols 2-5 open with PROTO; torch's legacy (non-zip) format is such a pickle
UNSAFE = "Weights only load failed"  # torch's marker for a pickle that weights_only refused


def unloadable_reason(path: str | Path, error: BaseException) -> str:
    """What `path` is, as a phrase (`the file is empty`, `a text file (starts with 'hello')`, ...), given the
    exception torch raised reading it. Never more than one line."""
    path = Path(path)
    if path.is_dir():
        return "a directory, not a file"
    if UNSAFE in str(error):  # a real pickle asking for a callable or class weights_only does not allow
        found = re.search(r"GLOBAL (\S+)", str(error))
        what = f"import {found[1]}" if found else "build Python objects other than tensors"
        return f"refused as unsafe: loading it would {what} (only tensors and plain containers are read)"
    with path.open("rb") as file:
        head = file.read(512)
    if not head:
        return "the file is empty"
    if head.startswith(ZIP_MAGIC):
        if not zipfile.is_zipfile(path):
            return "a truncated or damaged zip archive (its end is missing or corrupt: an interrupted copy?)"
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if not any(name.endswith("data.pkl") for name in names):
            return f"a zip archive that torch.save did not write (no data.pkl among its {len(names)} entries)"
        return f"a damaged PyTorch file ({type(error).__name__})"
    if head.startswith(PICKLE_PROTOCOL):
        if "mmap" in str(error):
            return "an old-format (non-zip) PyTorch pickle, which cannot be memory-mapped; re-save it with torch.save"
        return f"a pickle that torch could not read ({type(error).__name__}: damaged, or not written by torch.save)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"not a PyTorch file (it starts with the bytes {head[:8].hex(' ')})"
    first = text.strip().splitlines()[0][:40] if text.strip() else ""
    return f"a text file (it starts with {first!r})"
