"""The training commands' entry (`audioclip fit|validate|test|predict`): what the configuration alone can show wrong
is checked first, within a second or two, and only then is the LightningCLI imported (`audioclip.tasks.cli`; Lightning's
imports alone take several seconds on a small machine).

Checked here, from the config files and the command line, without torch or Lightning:
- a fixed `model.num_classes` against the class count the dataset's metadata declares (ESC-50, UrbanSound8K, your
  own class-folder tree or manifest; `audioclip.data.layouts`), before anything is decoded or a W&B run started;
- an `init_from` path that does not exist.

Where the settings cannot be read here with certainty (a YAML error, a key written another way), nothing is decided:
the LightningCLI parses them itself, and its pre-flight (`AudioCLIPCLI._preflight`) makes the same checks, and more,
still before any data is read. `expand_defaults` (a phase file's `defaults:` list) is shared by both.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

# the LightningModules whose classifier size may be fixed in the configuration, with what a mismatch says
_CLASS_COUNT_WORDING = {
    "AudioPretrainModule": "the classifier has {fixed} outputs but the dataset has {data} classes (leave num_classes "
    "out to take the data's)",
    "FinetuneModule": "the model is set up for {fixed} classes but the dataset has {data}",
}


# the phase module -> the wording of its check (a subclass inherits its parent's `check_fits_data`)
_WORDING_OF = {"AudioPretrainModule": "AudioPretrainModule", "FinetuneModule": "FinetuneModule",
               "FolderFinetuneModule": "FinetuneModule"}  # fmt: skip


def class_count_error(module: str, fixed: int, data: int) -> ValueError:
    """The one-line refusal of a `model.num_classes` that is not the data's (`module`: a key of the wording table)."""
    return ValueError(f"model.num_classes: {_CLASS_COUNT_WORDING[module].format(fixed=fixed, data=data)}")


def missing_weights_file(init_from: str) -> bool:
    """Whether `init_from` names a local file (a path with a folder in it, not a tag or a URL) that does not exist."""
    return "/" in init_from and "://" not in init_from and not Path(init_from).expanduser().exists()


def expand_defaults(argv: Sequence[str]) -> list[str]:
    """Every `--config FILE` whose YAML has a `defaults:` list (paths relative to FILE's folder) becomes `--config`
    for each of them, recursively and each file once, followed by FILE's own settings without the list: a phase file
    composes its groups and overrides them. What jsonargparse sees, and `--print_config` prints, is whole."""
    out: list[str] = []
    seen: set[Path] = set()

    def add(given: str) -> None:
        path = Path(given)
        resolved = path.resolve()
        if resolved in seen:
            return
        seen.add(resolved)
        try:
            content = yaml.safe_load(resolved.read_text()) if resolved.is_file() else None
        except yaml.YAMLError:
            content = None  # `check_config_files` names the file and the place
        if not isinstance(content, dict) or "defaults" not in content:
            out.extend(["--config", given])  # as given: `str(Path(...))` would fold a YAML string's `s3://` to `s3:/`
            return
        for default in content.pop("defaults") or []:
            child = resolved.parent / default
            if not child.is_file():
                raise ValueError(f"--config {path}: defaults: {default}: no such file ({child})")
            add(str(child))
        if content:
            out.extend(["--config", yaml.safe_dump(content, sort_keys=False)])

    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("--config", "-c") and i + 1 < len(args):  # `-c` is jsonargparse's short form
            add(args[i + 1])
            i += 2
            continue
        if arg.startswith("--config="):
            add(arg.removeprefix("--config="))
        else:
            out.append(arg)
        i += 1
    return out


class _Unsure(Exception):
    """The settings cannot be read here with certainty: leave them to the LightningCLI."""


def _merge(into: dict, settings: Any) -> None:
    if not isinstance(settings, dict):
        raise _Unsure
    for key, value in settings.items():
        old = into.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            if "class_path" in value and value["class_path"] != old.get("class_path"):
                into[key] = dict(value)  # another class: the earlier class's init_args do not carry over
            else:
                _merge(old, value)
        else:
            into[key] = value


def _set(into: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    if keys[0] in ("model", "data") and len(keys) > 1 and keys[1] not in ("class_path", "init_args"):
        keys.insert(1, "init_args")  # `--model.num_classes 7` is `--model.init_args.num_classes 7`
    if keys[0] in ("model", "data") and len(keys) == 1:
        into[keys[0]] = {"class_path": value}  # `--model FinetuneModule`: another class, its own arguments
        return
    node = into
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise _Unsure
    node[keys[-1]] = value


def resolved_settings(argv: Sequence[str]) -> dict:
    """The settings `argv` gives, as far as this reading goes: the `--config` files (and YAML strings) merged in
    order, then each `--key value` / `--key=value` on top. Raises `_Unsure` where it cannot tell."""
    args = expand_defaults(argv)
    settings: dict = {}
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg.startswith("-") and not arg.startswith("--"):
            raise _Unsure  # a short option this reading does not know
        if not arg.startswith("--"):
            continue
        key, given, value = arg[2:].partition("=")
        if not given:
            if i >= len(args) or args[i].startswith("--"):
                continue  # a flag (`--print_config`): no setting of the model or the data
            value, i = args[i], i + 1
        try:
            if key == "config":
                path = Path(value)
                _merge(settings, yaml.safe_load(path.read_text() if path.is_file() else value))
            else:
                _set(settings, key, yaml.safe_load(value))
        except (yaml.YAMLError, OSError, ValueError) as error:
            raise _Unsure from error
    return settings


def _class_name(section: Any) -> str | None:
    path = section.get("class_path") if isinstance(section, dict) else None
    return path.rsplit(".", 1)[-1] if isinstance(path, str) else None


def _init_args(section: Any) -> dict:
    found = section.get("init_args") if isinstance(section, dict) else None
    return found if isinstance(found, dict) else {}


def _declared_class_names(data: Any) -> list[str] | None:
    """The class names the data's metadata declares, as its DataModule reads them (`audioclip.data.layouts`), or None
    where this reading cannot tell (another DataModule, no root, a dataset that is missing or malformed: the
    DataModule says what is wrong with it, in its own words)."""
    from audioclip.data.errors import DatasetNotFoundError, MetadataError
    from audioclip.data.layouts import LAYOUTS, declared_class_names, read_manifest, read_tree

    name, args = _class_name(data), _init_args(data)
    root, manifest = args.get("root"), args.get("manifest")
    try:
        if name in LAYOUTS and isinstance(root, str):
            return declared_class_names(LAYOUTS[name], root)
        if name == "AudioFolderDataModule" and isinstance(manifest, str) and root is None:
            return read_manifest(Path(manifest))[2]
        if name == "AudioFolderDataModule" and isinstance(root, str) and manifest is None and not Path(root).is_file():
            return read_tree(Path(root))[1]
    except (DatasetNotFoundError, MetadataError):
        return None
    return None


def check_settings(settings: dict) -> None:
    """The checks the settings alone allow (see the module's docstring); ValueError with one line."""
    model, data = settings.get("model"), settings.get("data")
    init_from = _init_args(model).get("init_from")
    if isinstance(init_from, str) and missing_weights_file(init_from):
        raise ValueError(f"init_from: {init_from}: no such file")
    fixed, module = _init_args(model).get("num_classes"), _WORDING_OF.get(_class_name(model) or "")
    if module is not None and isinstance(fixed, int) and not isinstance(fixed, bool):
        names = _declared_class_names(data)
        if names is not None and len(names) != fixed:
            raise class_count_error(module, fixed, len(names))


def check_before_lightning(argv: Sequence[str]) -> None:
    """`check_settings` on what `argv` gives, when it can be read here; silent otherwise, and for a command that
    only prints (`--print_config`, `--help`, `--model.help X`: nothing is built, so nothing has to fit)."""
    if any(arg.startswith("--print_config") or arg in ("-h", "--help") or arg.endswith(".help") for arg in argv):
        return
    try:
        settings = resolved_settings(argv)
    except _Unsure:
        return
    check_settings(settings)


def _subcommand(name: str) -> Callable[[Sequence[str]], int]:
    def run(argv: Sequence[str]) -> int:
        check_before_lightning(argv)
        return getattr(importlib.import_module("audioclip.tasks.cli"), name)(argv)

    run.__name__ = run.__qualname__ = name
    run.__doc__ = f"`audioclip {name} ...`: the quick checks, then the LightningCLI (`audioclip.tasks.cli.{name}`)."
    return run


fit, validate, test, predict = (_subcommand(name) for name in ("fit", "validate", "test", "predict"))
