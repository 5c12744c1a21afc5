"""`audioclip doctor` (`make doctor`): what this install is, and what in it is broken.

It prints the versions that matter beside the locked ones (uv.lock), the install check (every compiled extension
loads, every audio format decodes), the devices and the precision `auto` picks on them, the tools AudioSet
preparation calls (ffmpeg, yt-dlp), the W&B mode and login, the official weights in the cache and the datasets it
finds under the data root. A problem is a line starting with ``problem:``; the exit status is 1 when there is
one. Things that are merely absent (weights not downloaded, a dataset not fetched) are said, with the command
that gets them, but are not problems.
"""

from __future__ import annotations

import argparse
import importlib.util
import netrc
import os
import platform
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from audioclip.install_check import REPORTED, installed_version, locked_versions, run_checks

# dataset name -> (the file that says a root is in its official layout, relative to the root; how to get it)
DATASETS = {
    "esc50": ("meta/esc50.csv", "make data-esc50"),
    "us8k": ("metadata/UrbanSound8K.csv", "make data-us8k"),
}


class Report:
    """Lines in sections; problems counted."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def section(self, title: str) -> None:
        print(f"\n{title}")

    def info(self, text: str) -> None:
        print(f"  {text}")

    def problem(self, text: str) -> None:
        self.problems.append(text)
        print(f"  problem: {text}")


def versions(report: Report) -> None:
    locked = locked_versions()
    report.section(f"Python {platform.python_version()} ({sys.executable})")
    if not locked:
        report.info("no uv.lock beside the package (installed from a wheel?): versions are not compared")
    for package in REPORTED:
        version = installed_version(package)
        want = locked.get(package)
        if version is None:
            report.problem(f"{package} is not installed (run `make install`)")
        elif want and version.split("+")[0] != want:
            report.problem(f"{package} {version} is installed, the lock holds {want} (run `make install`)")
        else:
            report.info(f"{package:<13} {version}{'  (locked)' if want else ''}")


def extensions(report: Report) -> bool:
    report.section("Compiled extensions and audio formats")
    problems = run_checks()
    for problem in problems:
        report.problem(str(problem))
    if not problems:
        report.info("torch, torchaudio, torchvision, soundfile (wav, flac, ogg, mp3), av (mp4/aac): load and decode")
    return not any(p.package == "torch" for p in problems)


def devices(report: Report) -> None:
    import torch

    from audioclip.precision import auto_precision, cpu_bf16, cuda_bf16

    report.section("Devices")
    has_bf16, why = cpu_bf16()
    report.info(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; bf16: {why}")
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            report.info(f"CUDA {index}: {props.name}, {props.total_memory / 2**30:.0f} GiB (CUDA {torch.version.cuda})")
        report.info(f"bf16 on the GPU: {cuda_bf16()[1]}")
    else:
        report.info(f"CUDA: not available (torch {torch.__version__} built for CUDA {torch.version.cuda})")
    mps = getattr(torch.backends, "mps", None)
    report.info(f"MPS: {'available' if mps is not None and mps.is_available() else 'not available'}")
    chosen, reason = auto_precision()
    report.info(f"precision auto -> {chosen}: {reason}")


def tools(report: Report) -> None:
    report.section("Tools for AudioSet preparation")
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None and importlib.util.find_spec("imageio_ffmpeg") is not None:
        import imageio_ffmpeg

        ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    report.info(f"ffmpeg: {ffmpeg or 'absent (apt-get install ffmpeg, or make install EXTRAS=audioset)'}")
    yt_dlp = installed_version("yt-dlp")
    report.info(f"yt-dlp: {yt_dlp or 'absent (make install EXTRAS=audioset)'}")


def wandb_state(report: Report) -> None:
    report.section("Weights & Biases")
    mode = os.environ.get("WANDB_MODE", "online (the make targets set offline unless WANDB_MODE is set)")
    report.info(f"mode: {mode}")
    if os.environ.get("WANDB_API_KEY"):
        report.info("logged in: yes (WANDB_API_KEY is set)")
        return
    try:
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1]
        logged_in = netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        logged_in = False
    report.info(f"logged in: {'yes (~/.netrc)' if logged_in else 'no (`wandb login` to sync runs; offline works)'}")


def weights(report: Report) -> None:
    from audioclip.models.pretrained import TAGS, WeightsError, cache_dir, sha256sum, verify

    report.section(f"Official weights in {cache_dir()}")
    for name, tag in TAGS.items():
        path = cache_dir() / tag.filename
        if not path.is_file():
            report.info(f"{name:<10} missing (make weights, or audioclip weights download {name})")
            continue
        try:
            verify(path, tag)
        except WeightsError as error:
            report.problem(f"{name}: {error}")
            continue
        if tag.sha256:
            report.info(f"{name:<10} present, sha256 verified")
        else:
            report.info(f"{name:<10} present, no published checksum (sha256 {sha256sum(path)[:16]}...)")


def datasets(report: Report, root: Path) -> None:
    report.section(f"Datasets under {root}")
    for name, (marker, command) in DATASETS.items():
        found = [p.parents[1] for p in sorted(root.glob(f"**/{marker}")) if ".audioclip-cache" not in p.parts]
        if not found:
            report.info(f"{name:<8} not found ({command}, or DATA=<root> on the training targets)")
        for dataset_root in found:
            clips = sum(1 for _ in (dataset_root / "audio").rglob("*.wav")) if (dataset_root / "audio").is_dir() else 0
            report.info(f"{name:<8} {dataset_root} ({clips} clips)")
    for index in sorted(root.glob("**/shards/*/index.json")):
        report.info(f"audioset shards {index.parent}")


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(prog="audioclip doctor", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data"), help="where to look for datasets (default data/)")
    args = parser.parse_args(list(argv))
    report = Report()
    versions(report)
    if extensions(report):
        devices(report)
        weights(report)
    tools(report)
    wandb_state(report)
    datasets(report, args.data)
    print()
    if report.problems:
        for problem in report.problems:
            print(f"doctor: problem: {problem}", file=sys.stderr)
        return 1
    print("doctor: no problems found")
    return 0
