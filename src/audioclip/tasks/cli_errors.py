"""A configuration error is one line naming the setting: `data.batch_size: Expected a <class 'int'>. Got value: abc
(in audioclip.data.ESC50DataModule)`, not the usage text and jsonargparse's nested report.

jsonargparse raises one exception per level of the configuration it was validating (`Parser key "data"`, the class
tried, `Parser key "batch_size"`, the type check), each chained to the one below (`__cause__`). The line is read off
that chain: the keys of the levels joined with dots, the class that was being built, and the innermost problem.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

from lightning.pytorch.cli import LightningArgumentParser

_KEY = re.compile(r'^Parser key "([^"]+)":')
_CLASS = re.compile(r"^Problem with given class_path '([^']+)'")
_GIVEN = re.compile(r"^\s*Given value: (.*)$", re.MULTILINE)


def _chain(error: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)


def one_line_error(message: str, error: BaseException | None = None) -> str:
    """`<key path>: <innermost problem>[, got <value>][ (in <class>)]` from jsonargparse's error chain."""
    chain = list(_chain(error))
    if not chain:
        return message.strip().splitlines()[0] if message.strip() else message
    keys, class_path, previous = [], None, None
    for level in chain:
        first = str(level).strip().splitlines()[0] if str(level).strip() else ""
        key = _KEY.match(first)
        if key and first != previous:  # jsonargparse re-raises a level as another type with the same text
            keys.append(key[1])
        elif found := _CLASS.match(first):
            class_path = found[1]
        previous = first
    innermost = str(chain[-1]).strip().splitlines()
    problem = innermost[-1 if _KEY.match(innermost[0]) else 0].strip().removeprefix("- ") if innermost else message
    given = _GIVEN.search(message)
    if given and not given[1].startswith("NestedArg(") and given[1] not in problem:
        problem += f", got {given[1]!r}"
    if class_path and class_path not in problem:
        problem += f" (in {class_path})"
    return f"{'.'.join(keys)}: {problem}" if keys else problem


class OneLineErrorParser(LightningArgumentParser):
    """A parse error is one line naming the setting (`one_line_error`) and exit status 2.

    Abbreviated options are refused: `--trainer.max_epoch` is a misspelling, not `--trainer.max_epochs`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        # jsonargparse tries alternatives with exit_on_error off and catches their errors
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG"):
            super().error(message, ex)
        print(f"audioclip: error: {one_line_error(message, ex)} (see --help)", file=sys.stderr)
        sys.exit(2)


def instantiation_error(error: BaseException) -> BaseException:
    """What a class's `__init__` raised (e.g. `fold must be in 1..5`), out of jsonargparse's report around it."""
    for level in _chain(error):
        text = str(level)
        if not text.startswith(("Does not validate", "Problem with given class_path", "Parser key")):
            return level
    return ValueError(one_line_error(str(error), error))
