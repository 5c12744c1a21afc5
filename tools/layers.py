"""The house rules of src/audioclip, read off the code: imports point down the layers, no import circle, no file over
500 lines, no tracker numbers in the source. `python tools/layers.py` prints every breach (exit 1 if any);
`tests/test_layout.py` runs the same checks.

Layers, bottom to top (a module may import its own layer and the ones below, never one above):

    0  constants, precision, process_group, outputs, lazy, install_check, storage, memory
    1  models/        plain nn.Modules, the registry, weights
    2  data/          decoding, caches, DataModules, AudioSet preparation
    3  inference      load / classify / embed
    4  evaluation/    zero-shot, querying, metrics, index and search, the report; hear (the HEAR API)
       export/        safetensors + config + model card, the Hub, ONNX (beside evaluation: it reuses the report)
    5  tasks/         LightningModules, the training CLI, callbacks, checkpoints, W&B
    6  cli, demo, doctor, the package's __init__ (the command line and the lazy public names)
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "audioclip"
MAX_LINES = 500
LAYERS = {
    "audioclip.constants": 0,
    "audioclip.precision": 0,
    "audioclip.process_group": 0,
    "audioclip.outputs": 0,
    "audioclip.install_check": 0,
    "audioclip.lazy": 0,
    "audioclip.storage": 0,
    "audioclip.memory": 0,
    "audioclip.models": 1,
    "audioclip.data": 2,
    "audioclip.inference": 3,
    "audioclip.hear": 4,  # the HEAR API over inference, beside evaluation
    "audioclip.evaluation": 4,
    "audioclip.export": 4,
    "audioclip.tasks": 5,
    "audioclip.cli": 6,
    "audioclip.demo": 6,
    "audioclip.doctor": 6,
    "audioclip": 6,  # the package's __init__
}
TRACKER = re.compile(r"\b[Ii]ssues?\s+#?\d+")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> int:
    """The layer of a module: that of the longest prefix in LAYERS."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in LAYERS:
            return LAYERS[name]
    raise KeyError(f"{module}: no layer in tools/layers.py")


def imports(path: Path) -> dict[str, int]:
    """Every audioclip module `path` imports (at any depth of the file, lazy imports included) -> line number."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: dict[str, int] = {}
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base]
        else:
            continue
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                found.setdefault(name, node.lineno)
    return found


def files() -> list[Path]:
    return sorted((SRC / PACKAGE).rglob("*.py"))


def _resolve(name: str, known: set[str]) -> str | None:
    """`audioclip.data.audioset.parts.INDEX` style names -> the module that defines them."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def graph() -> dict[str, dict[str, int]]:
    known = {module_name(p) for p in files()}
    edges: dict[str, dict[str, int]] = {}
    for path in files():
        me = module_name(path)
        targets = {}
        for name, line in imports(path).items():
            target = _resolve(name, known)
            if target and target != me:
                targets[target] = line
        edges[me] = targets
    return edges


def upward_imports() -> list[str]:
    found = []
    edges = graph()
    for path in files():
        me = module_name(path)
        for target, line in edges[me].items():
            if layer(target) > layer(me) and not (me == PACKAGE):
                found.append(f"{path.relative_to(SRC.parent)}:{line}: {me} (layer {layer(me)}) imports {target} "
                             f"(layer {layer(target)})")
    return found


def circles() -> list[str]:
    """Every import circle between modules, each once, as `a -> b -> a`. Package __init__s that only re-export
    lazily are left out (they import on first attribute use, not at import)."""
    edges = graph()
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in edges.get(node, {}):
            if state.get(nxt) == 1:
                found.append([*stack[stack.index(nxt):], nxt])
            elif not state.get(nxt):
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if not state.get(node):
            visit(node)
    return [" -> ".join(circle) for circle in found if not any(_is_package(m) for m in circle[:-1])]


def _is_package(module: str) -> bool:
    return (SRC / Path(*module.split(".")) / "__init__.py").is_file()


def long_files() -> list[str]:
    return [
        f"{p.relative_to(SRC.parent)}: {n} lines (at most {MAX_LINES})"
        for p in files()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    ]


def tracker_numbers() -> list[str]:
    return [
        f"{p.relative_to(SRC.parent)}:{i}: {line.strip()[:100]}"
        for p in files()
        for i, line in enumerate(p.read_text().splitlines(), start=1)
        if TRACKER.search(line)
    ]


def main() -> int:
    problems = [*upward_imports(), *circles(), *long_files(), *tracker_numbers()]
    for problem in problems:
        print(problem)
    print(f"{len(problems)} breaches of the layout rules" if problems else "layout: no breaches", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
