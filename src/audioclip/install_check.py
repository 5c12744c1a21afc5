"""Does this install work? Load every compiled extension the project uses and decode one file of each audio format.

torch, torchaudio and torchvision are built against each other: a torchaudio from another torch release imports
with an ``undefined symbol`` error from inside ``libtorchaudio.so``, which pytest shows as dozens of collection
errors. This check runs first in ``make test`` (``python -m audioclip.install_check``) and inside
``audioclip doctor``, and says what is wrong in one line per package: its version, the version the lock holds,
and the torch it was built for.

Nothing here imports torch at module level: a broken torch is one of the things it reports.
"""

from __future__ import annotations

import importlib.metadata as metadata
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# the packages whose versions `audioclip doctor` compares with the lock, in the order it prints them
REPORTED = ("torch", "torchaudio", "torchvision", "lightning", "torchmetrics", "wandb", "litdata", "soundfile", "av")
# the audio formats the DataModules decode with soundfile (own-data trees and manifests, ESC-50, US8K, AudioSet
# after extraction), with the subtype each is written in here
SOUNDFILE_FORMATS = (("wav", "PCM_16"), ("flac", "PCM_16"), ("ogg", "VORBIS"), ("mp3", "MPEG_LAYER_III"))
LOCK_FILE = Path(__file__).resolve().parents[2] / "uv.lock"  # present in a source checkout (make install)


@dataclass(frozen=True)
class Problem:
    package: str
    line: str

    def __str__(self) -> str:
        return self.line


def installed_version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def paired_version(package: str, torch_version: str, locked: dict[str, str]) -> str | None:
    """The torchaudio or torchvision release built for ``torch_version``: the locked one when the lock holds that
    torch, else by the release rule (torchaudio 2.X.Y and torchvision 0.(X+15).Y pair with torch 2.X.Y). Their
    metadata cannot tell: torchaudio 2.11.1 declares ``torch>=2.11`` and does not load with torch 2.11.0."""
    base = torch_version.split("+")[0]
    if locked.get("torch") == base and package in locked:
        return locked[package]
    match = re.match(r"^2\.(\d+)\.(\d+)$", base)
    if not match:
        return None
    minor, patch = int(match.group(1)), int(match.group(2))
    return {"torchaudio": f"2.{minor}.{patch}", "torchvision": f"0.{minor + 15}.{patch}"}.get(package)


def locked_versions(lock: Path = LOCK_FILE) -> dict[str, str]:
    """name -> version of every package in ``uv.lock`` that has a single version there ({} without a lock)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: no TOML reader in the standard library
        return {}
    if not lock.is_file():
        return {}
    versions: dict[str, set[str]] = {}
    for package in tomllib.loads(lock.read_text()).get("package", []):
        versions.setdefault(package["name"], set()).add(str(package.get("version", "")))
    return {name: next(iter(found)) for name, found in versions.items() if len(found) == 1}


def _describe(package: str, error: BaseException, locked: dict[str, str]) -> str:
    """``torchaudio 2.11.1 does not load with torch 2.11.0 (OSError: ...); torch 2.11.0 needs torchaudio 2.11.0``."""
    version = installed_version(package) or "(not installed)"
    torch_version = installed_version("torch") or "(not installed)"
    line = f"{package} {version}"
    line += f" does not load with torch {torch_version}" if package != "torch" else " does not load"
    line += f" ({_root_cause(error)})"
    wanted = paired_version(package, torch_version, locked) if package in ("torchaudio", "torchvision") else None
    if wanted and wanted != version.split("+")[0]:
        line += f"; torch {torch_version} needs {package} {wanted}"
    elif package in locked and locked[package] != version:
        line += f"; the lock holds {package} {locked[package]}"
    return line


def _root_cause(error: BaseException) -> str:
    """The innermost error's first line: a library that fails to load says why (``undefined symbol: ...``) only in
    the error it was raised from."""
    while error.__cause__ is not None or (error.__context__ is not None and not error.__suppress_context__):
        error = error.__cause__ or error.__context__
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def _torch() -> None:
    import torch

    assert float((torch.ones(3) * 2).sum()) == 6.0


def _torchaudio() -> None:
    import torch
    import torchaudio.functional as AF
    import torchaudio.transforms as AT

    AF.resample(torch.zeros(1, 441), 44_100, 16_000)
    AT.AmplitudeToDB()(torch.ones(1, 4))


def _torchvision() -> None:
    import torch
    from torchvision.ops import nms

    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    assert nms(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0]


def _tone(rate: int, seconds: float = 0.25):
    import numpy as np

    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype("float32")


def _soundfile(folder: Path) -> None:
    """Write a tone in each format with libsndfile, read it back, and check its length and that it is not silent."""
    import numpy as np
    import soundfile as sf

    tone = _tone(44_100)
    for suffix, subtype in SOUNDFILE_FORMATS:
        path = folder / f"tone.{suffix}"
        try:
            sf.write(path, tone, 44_100, subtype=subtype)
            decoded, rate = sf.read(path, dtype="float32")
        except Exception as error:
            raise RuntimeError(f"cannot write and read .{suffix} ({_root_cause(error)})") from None
        if rate != 44_100 or abs(len(decoded) - len(tone)) > 4_096 or float(np.abs(decoded).max()) < 0.1:
            raise RuntimeError(f".{suffix} decoded to {len(decoded)} samples at {rate} Hz, not the tone written")


def _av(folder: Path) -> None:
    """Encode a tone as AAC in MP4 with PyAV's FFmpeg and decode it back (AudioSet clips are videos)."""
    import av

    path = folder / "tone.mp4"
    rate = 44_100
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate)
        frame = av.AudioFrame.from_ndarray(_tone(rate)[None, :], format="fltp", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with av.open(str(path)) as container:
        samples = sum(f.samples for f in container.decode(audio=0))
    if samples < rate // 8:
        raise RuntimeError(f"AAC in MP4 decoded to {samples} samples, expected about {len(_tone(rate))}")


def checks(folder: Path) -> list[tuple[str, Callable[[], None]]]:
    """(package, check) in dependency order: torch first, since every other check needs it."""
    return [
        ("torch", _torch),
        ("torchaudio", _torchaudio),
        ("torchvision", _torchvision),
        ("soundfile", lambda: _soundfile(folder)),
        ("av", lambda: _av(folder)),
    ]


def run_checks(locked: dict[str, str] | None = None) -> list[Problem]:
    """Every failing extension as one line naming the package, its version and what it needs."""
    locked = locked_versions() if locked is None else locked
    problems: list[Problem] = []
    with tempfile.TemporaryDirectory(prefix="audioclip-install-check-") as folder:
        for package, check in checks(Path(folder)):
            if package != "torch" and any(p.package == "torch" for p in problems):
                break  # nothing else loads without torch; its line says it all
            try:
                check()
            except Exception as error:  # an extension fails with OSError, ImportError, RuntimeError, ...
                problems.append(Problem(package, _describe(package, error, locked)))
    return problems


def main() -> int:
    problems = run_checks()
    for problem in problems:
        print(f"install check: {problem}", file=sys.stderr)
    if problems:
        print("install check: run `make install` to restore the locked versions (uv.lock); `make doctor` for more",
              file=sys.stderr)
        return 1
    print("install check: torch, torchaudio, torchvision, soundfile (wav, flac, ogg, mp3) and av (mp4/aac) load")
    return 0


if __name__ == "__main__":
    sys.exit(main())
