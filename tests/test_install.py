"""The install: the venv holds the locked versions, the install check and `audioclip doctor` name a torchaudio
built for another torch in one line, and `make lock-check` catches a pyproject.toml edited without re-locking."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from audioclip.install_check import REPORTED, installed_version, locked_versions, paired_version

REPO = Path(__file__).resolve().parents[1]
TORCHAUDIO_ERROR = "libtorchaudio.so: undefined symbol: torch_exception_get_what_without_backtrace"


def _run(args: list[str], env_extra: dict | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


@pytest.fixture
def mismatched_torchaudio(tmp_path) -> Path:
    """A site folder, put first on PYTHONPATH, holding a torchaudio 2.11.1 that fails to load as the real 2.11.1
    wheel does beside torch 2.11.0 (checked with that wheel: the OSError "Could not load this library", raised from
    the loader's "undefined symbol"; its metadata asks only for torch>=2.11)."""
    site = tmp_path / "site"
    (site / "torchaudio").mkdir(parents=True)
    (site / "torchaudio" / "__init__.py").write_text(
        textwrap.dedent(f"""
            try:
                raise OSError("{TORCHAUDIO_ERROR}")
            except OSError as error:
                raise OSError("Could not load this library: libtorchaudio.so") from error
        """)
    )
    info = site / "torchaudio-2.11.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: torchaudio\nVersion: 2.11.1\nRequires-Dist: torch>=2.11\n"
    )
    (info / "RECORD").write_text("")
    return site


def test_the_venv_holds_the_locked_versions_of_every_reported_package():
    locked = locked_versions()
    assert locked, "uv.lock not found beside the package"
    for package in REPORTED:
        assert installed_version(package).split("+")[0] == locked[package], package


def test_the_install_check_passes_on_the_locked_install():
    result = _run([sys.executable, "-m", "audioclip.install_check"])
    assert result.returncode == 0, result.stderr
    assert "torchaudio" in result.stdout and "mp3" in result.stdout


def test_a_torchaudio_built_for_another_torch_fails_the_check_in_one_line_naming_both_versions(mismatched_torchaudio):
    result = _run([sys.executable, "-m", "audioclip.install_check"], {"PYTHONPATH": str(mismatched_torchaudio)})
    assert result.returncode == 1
    problems = [line for line in result.stderr.splitlines() if "does not load" in line]
    assert len(problems) == 1, result.stderr
    torch_version = installed_version("torch")
    assert f"torchaudio 2.11.1 does not load with torch {torch_version}" in problems[0]
    assert "undefined symbol: torch_exception_get_what_without_backtrace" in problems[0]
    assert f"torch {torch_version} needs torchaudio {locked_versions()['torchaudio']}" in problems[0]
    assert "Traceback" not in result.stderr


def test_doctor_reports_the_mismatched_torchaudio_and_exits_non_zero(mismatched_torchaudio, tmp_path):
    result = _run(
        [sys.executable, "-m", "audioclip.cli", "doctor", "--data", str(tmp_path)],
        {"PYTHONPATH": str(mismatched_torchaudio)},
    )
    assert result.returncode == 1
    summary = [line for line in result.stderr.splitlines() if line.startswith("doctor: problem:")]
    assert any("torchaudio 2.11.1 is installed, the lock holds 2.11.0" in line for line in summary), result.stderr
    assert any("does not load with torch" in line for line in summary), result.stderr


def test_doctor_passes_on_the_locked_install_and_finds_a_dataset(tmp_path):
    esc50 = tmp_path / "esc50"
    (esc50 / "meta").mkdir(parents=True)
    (esc50 / "meta" / "esc50.csv").write_text("filename,fold,target,category,esc10,src_file,take\n")
    result = _run([sys.executable, "-m", "audioclip.cli", "doctor", "--data", str(tmp_path)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "torchaudio    2.11.0  (locked)" in result.stdout
    assert f"esc50    {esc50} (0 clips)" in result.stdout
    assert "us8k     not found (make data-us8k" in result.stdout


def test_the_pair_of_a_torch_outside_the_lock_follows_the_release_rule():
    locked = {"torch": "2.11.0", "torchaudio": "2.11.0", "torchvision": "0.26.0"}
    assert paired_version("torchaudio", "2.11.0+cu130", locked) == "2.11.0"
    assert paired_version("torchaudio", "2.12.1", locked) == "2.12.1"
    assert paired_version("torchvision", "2.12.1", locked) == "0.27.1"


@pytest.fixture
def project_copy(tmp_path) -> Path:
    for name in ("pyproject.toml", "uv.lock", "README.md", "Makefile"):
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


def _lock_check(folder: Path) -> subprocess.CompletedProcess:
    uv = REPO / ".tools" / "bin" / "uv"
    assert uv.is_file(), f"{uv} missing: `make install` bootstraps it"
    return _run(["make", "--no-print-directory", "lock-check", f"TOOLS={REPO / '.tools'}"], cwd=folder)


def test_lock_check_passes_on_the_committed_lock_and_fails_on_an_unlocked_edit(project_copy):
    assert _lock_check(project_copy).returncode == 0
    pyproject = project_copy / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"tqdm>=4.66"', '"tqdm>=4.67"'))
    result = _lock_check(project_copy)
    assert result.returncode != 0
    assert "uv.lock does not match pyproject.toml: run `make lock`" in result.stderr
