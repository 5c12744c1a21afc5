"""The command line answers at once: `--help`, `--version` and argument errors import neither torch nor Lightning
(the time itself is measured in the README, not asserted), and every option says what it is for."""

import argparse
import subprocess
import sys

import pytest

from audioclip import __version__

QUICK = [
    ["--help"], ["--version"], ["classify", "--help"], ["weights", "--help"], ["evaluate", "--help"],
    ["evaluate", "zeroshot", "--help"], ["evaluate", "query", "--help"], ["index", "--help"], ["search", "--help"],
    ["report", "--help"], ["prepare", "--help"], ["prepare", "audioset", "all", "--help"],
    ["--bogus"], ["classify"], ["evaluate", "zeroshot", "--bogus"],
]  # fmt: skip

PROBE = """
import sys
from audioclip.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as done:
    code = done.code
heavy = sorted(m for m in ("torch", "lightning", "clip", "torchaudio", "wandb") if m in sys.modules)
print("HEAVY", ",".join(heavy), file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.parametrize("argv", QUICK, ids=" ".join)
def test_help_version_and_argument_errors_import_nothing_heavy(argv):
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == (2 if "--help" not in argv and "--version" not in argv else 0), done.stderr
    heavy = done.stderr.rsplit("HEAVY", 1)[1].strip()
    assert heavy == "", f"imported before the arguments were parsed: {heavy}"
    if argv == ["--version"]:
        assert done.stdout.strip() == f"audioclip {__version__}"
    if done.returncode == 2:
        assert "Traceback" not in done.stderr


class _Built(Exception):
    pass


def _parser_of(command, monkeypatch) -> argparse.ArgumentParser:
    """The parser a subcommand function builds and parses with (caught at its `parse_args`)."""
    built = []

    def catch(self, *args, **kwargs):
        built.append(self)
        raise _Built

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", catch)
        with pytest.raises(_Built):
            command([])
    return built[0]


def _parsers(monkeypatch) -> dict[str, argparse.ArgumentParser]:
    from audioclip.cli import _parser
    from audioclip.data.audioset import prepare
    from audioclip.evaluation import cli as evaluation
    from audioclip.evaluation import report

    def with_subparsers(parser: argparse.ArgumentParser, name: str) -> dict[str, argparse.ArgumentParser]:
        found = {name: parser}
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    if sub.add_help:  # the placeholders of subcommands parsed elsewhere have no options
                        found.update(with_subparsers(sub, f"{name} {sub_name}"))
        return found

    found = with_subparsers(_parser(), "audioclip")
    found.update(with_subparsers(evaluation._evaluate_parser(), "audioclip evaluate"))
    found.update(with_subparsers(prepare._parser(), "audioclip prepare"))
    for name, command in (("index", evaluation.index), ("search", evaluation.search_cli), ("report", report.main)):
        found[f"audioclip {name}"] = _parser_of(command, monkeypatch)
    return found


def test_every_option_has_help(monkeypatch):
    parsers = _parsers(monkeypatch)
    assert {"audioclip classify", "audioclip evaluate zeroshot", "audioclip index", "audioclip report"} <= set(parsers)
    missing = [
        f"{name}: {action.option_strings or action.dest}"
        for name, parser in parsers.items()
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction) and not action.help
    ]
    assert missing == []


def test_every_subcommand_is_one_row_of_the_table_and_resolves_to_a_function():
    import importlib

    from audioclip.cli import COMMANDS, _parser

    listed = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(listed) == set(COMMANDS)
    for name, (_, target) in COMMANDS.items():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), name


def test_the_run_directory_alone_places_and_names_the_wandb_run(tmp_path):
    from jsonargparse import Namespace

    from audioclip.tasks.cli import loggers_follow_run_dir

    wandb = "lightning.pytorch.loggers.WandbLogger"
    run = tmp_path / "finetune-esc50" / "fold3"
    logger = Namespace(class_path=wandb, init_args=Namespace(save_dir="."))
    trainer = Namespace(default_root_dir=str(run), logger=logger)
    loggers_follow_run_dir(trainer)
    assert (trainer.logger.init_args.save_dir, trainer.logger.init_args.name) == (str(run), "finetune-esc50-fold3")
    chosen = Namespace(save_dir=str(tmp_path / "elsewhere"), name="mine")
    trainer = Namespace(default_root_dir=str(run), logger=[Namespace(class_path=wandb, init_args=chosen)])
    loggers_follow_run_dir(trainer)
    kept = trainer.logger[0].init_args
    assert (kept.save_dir, kept.name) == (str(tmp_path / "elsewhere"), "mine")
