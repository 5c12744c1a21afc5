"""The source uses Lightning and jsonargparse through their public interfaces only: no private attribute of their
objects (`trainer._checkpoint_connector`, `strategy._layer_sync`, `logger._wandb_init`, a LightningModule's
`self._trainer`, a LightningCLI's `self._get`), no override of their private methods (`_instantiate_trainer`). The
next release can change any of those without notice; with a lock that upgrade is a deliberate step, and this test
makes the step safe.

Two checks: the source text (every `x._name` where `_name` is a private name of Lightning or jsonargparse, read off
their own source, and not one our code defines) and the classes (a method of ours that overrides a private method of
a Lightning or jsonargparse base class). Both are also run on planted code, to show they catch it.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import audioclip

SRC = Path(audioclip.__file__).resolve().parent
LIBRARIES = ("lightning", "lightning_fabric", "jsonargparse")
# our reads of a private name that Lightning happens to define too, on an object that is not Lightning's
NOT_LIGHTNING = {
    "_version": "torch.Tensor._version (esresnext.py), the in-place version counter, read only to tell whether the "
    "fbsp parameters changed since the filter bank was built",
}


def _private_names(tree: ast.AST, own_objects_only: bool = False) -> set[str]:
    """Private names a source defines: functions, module names, attributes it assigns (with `own_objects_only`,
    only on `self` / `cls`: assigning a Lightning object's private attribute does not make it ours)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            if not own_objects_only or (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


@functools.cache
def library_private_names() -> frozenset[str]:
    """Every private attribute or method name Lightning's and jsonargparse's own source defines."""
    names: set[str] = set()
    for library in LIBRARIES:
        root = Path(importlib.import_module(library).__file__).parent
        for path in root.rglob("*.py"):
            names |= _private_names(ast.parse(path.read_text(encoding="utf-8")))
    return frozenset(names)


def private_accesses(sources: dict[str, str]) -> list[str]:
    """`where: expression` for every read of a private name of Lightning or jsonargparse that our code does not
    define itself."""
    own = set().union(*(_private_names(ast.parse(text), own_objects_only=True) for text in sources.values()))
    theirs = library_private_names() - own - set(NOT_LIGHTNING)
    found = []
    for where, text in sources.items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Attribute) and node.attr in theirs:
                found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    return found


def private_overrides(module_names: list[str]) -> list[str]:
    """`module.Class._method` for every method of ours that overrides a private method of a library base class."""
    found = []
    for name in module_names:
        module = importlib.import_module(name)
        for cls_name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != name:
                continue
            foreign = [base for base in cls.__mro__[1:] if base.__module__.split(".")[0] in LIBRARIES]
            for method in vars(cls):
                private = method.startswith("_") and not method.startswith(("__", "_abc"))  # `_abc_impl`: ABCMeta's
                if private and any(method in vars(b) for b in foreign):
                    found.append(f"{name}.{cls_name}.{method}")
    return found


def _sources() -> dict[str, str]:
    return {str(p.relative_to(SRC.parent)): p.read_text() for p in sorted(SRC.rglob("*.py"))}


def test_the_source_reads_no_private_attribute_of_another_library():
    assert private_accesses(_sources()) == []


def test_no_class_overrides_a_private_method_of_lightning_or_jsonargparse():
    names = [m.name for m in pkgutil.walk_packages([str(SRC)], prefix="audioclip.") if ".tasks" in m.name]
    assert "audioclip.tasks.cli" in names
    assert private_overrides(names) == []


@pytest.mark.parametrize(
    "planted",
    [
        "connector = trainer._checkpoint_connector",
        "trainer.strategy._layer_sync = plugin",
        "init = logger._wandb_init",
        "class CLI(LightningCLI):\n    def f(self):\n        return self._get(self.config, 'x')",
        "attached = self._trainer is not None",
    ],
)
def test_a_planted_private_access_is_found(planted):
    sources = {**_sources(), "planted.py": planted}
    assert [line.split(":")[0] for line in private_accesses(sources)] == ["planted.py"]


def test_a_planted_private_override_is_found(tmp_path, monkeypatch):
    (tmp_path / "planted_cli.py").write_text(
        "from lightning.pytorch.cli import LightningCLI\n\n"
        "class CLI(LightningCLI):\n    def _instantiate_trainer(self, config, callbacks):\n        return None\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert private_overrides(["planted_cli"]) == ["planted_cli.CLI._instantiate_trainer"]
