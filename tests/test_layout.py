"""The house a newcomer reads at a glance: imports point down the layers, no import circle, no file over 500 lines
and no tracker number under src/ (`tools/layers.py`), and every docs/ page or section the source cites exists."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("layers", ROOT / "tools" / "layers.py")
layers = importlib.util.module_from_spec(spec)
spec.loader.exec_module(layers)

CITATION = re.compile(r"(docs/[\w-]+\.md)(?:, \"([^\"]+)\"|'s \"([^\"]+)\")?")


def test_imports_point_down_the_layers():
    assert layers.upward_imports() == []


def test_no_two_modules_import_each_other():
    assert layers.circles() == []


def test_no_source_file_is_longer_than_500_lines():
    assert layers.long_files() == []


def test_the_source_cites_no_tracker_numbers():
    assert layers.tracker_numbers() == []


@pytest.mark.parametrize(
    "planted, check",
    [
        ("from audioclip.tasks.cli import fit\n", "upward_imports"),  # planted into models/
        ("import audioclip.data.audioset.distribute\n", "circles"),  # planted into the shard runner's module
        ("x = 1\n" * 501, "long_files"),
        ("# as issue 12 asked\n", "tracker_numbers"),
    ],
)
def test_each_rule_catches_a_planted_breach(planted, check, tmp_path, monkeypatch):
    """The checks run on a copy of src/ with one breach planted."""
    import shutil

    copy = tmp_path / "src"
    shutil.copytree(layers.SRC, copy, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    target = {
        "upward_imports": copy / "audioclip/models/registry.py",
        "circles": copy / "audioclip/data/audioset/shard.py",
        "long_files": copy / "audioclip/models/planted.py",
        "tracker_numbers": copy / "audioclip/constants.py",
    }[check]
    target.write_text((target.read_text() if target.exists() else "") + planted)
    monkeypatch.setattr(layers, "SRC", copy)
    assert getattr(layers, check)() != []


def _citations() -> list[tuple[str, str, str | None]]:
    found = []
    for path in sorted((ROOT / "src").rglob("*.py")):
        text = " ".join(path.read_text().split())  # a citation may wrap across lines
        for match in CITATION.finditer(text):
            found.append((str(path.relative_to(ROOT)), match[1], match[2] or match[3]))
    return found


def test_every_docs_page_and_section_the_source_cites_exists():
    citations = _citations()
    assert any(page == "docs/design.md" for _, page, _ in citations)
    for where, page, section in citations:
        assert (ROOT / page).is_file(), f"{where} cites {page}, which does not exist"
        if section:
            headings = {line.lstrip("#").strip() for line in (ROOT / page).read_text().splitlines()
                        if line.startswith("#")}  # fmt: skip
            assert section in headings, f"{where} cites {page}, \"{section}\": no such section"


def test_no_source_cites_the_design_document_outside_the_repository():
    assert not [p for p in (ROOT / "src").rglob("*.py") if "DESIGN.md" in p.read_text()]


@pytest.mark.parametrize("package", ["audioclip", "audioclip.data", "audioclip.data.audioset"])
def test_every_name_a_package_face_exports_is_the_thing_it_names(package):
    """A lazily exported name that is also a submodule's name resolves to the module once that submodule is imported
    (`from audioclip.data.audioset import ingest` gave the module ingest.py, not the function): every exported name must
    be a class, function or constant, never a module."""
    import inspect
    import pkgutil

    module = importlib.import_module(package)
    for submodule in pkgutil.iter_modules(module.__path__):  # once imported, a submodule shadows the lazy name
        importlib.import_module(f"{package}.{submodule.name}")
    for name in module.__all__:
        value = getattr(module, name)
        assert not inspect.ismodule(value), f"{package}.{name} is the module {value.__name__}, not what it names"


def test_no_two_test_files_share_a_name():
    """pytest imports test files by their base name (prepend import mode, no __init__.py), so two test files of one
    name in different folders stop the whole collection: tests/data/test_download.py (the dataset archives) beside
    tests/data/audioset/test_download.py (YouTube) did."""
    seen: dict[str, Path] = {}
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if path.name == "conftest.py" or "resolved_before" in path.parts:
            continue
        other = seen.setdefault(path.name, path)
        assert other == path, f"{path.relative_to(ROOT)} and {other.relative_to(ROOT)} share a name"
