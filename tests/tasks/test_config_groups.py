"""The phase files compose config groups (conf/data, conf/model, conf/optim, conf/trainer.yaml) and override only what
differs; every phase resolves to the settings it resolved to before the groups existed.

`resolved_before/<phase>.yaml` is `audioclip fit --config conf/trainer.yaml --config conf/<phase>.yaml --print_config`
as printed by the project before the restructuring (commit e4de445). Three changes are deliberate, and applied to
that snapshot by `_as_now` below, each named: the optimiser and schedule moved from the phases' signatures into
`optimizer` / `scheduler` (same values; SGD's `nesterov: true` now said, as the code hard-wired it); the run-safety
flags became callback groups (`nonfinite_guard`, `metrics_file`; `save_on_signal` gained its DDP interval, which
the NaN check's interval used to set); the audio-head fine-tunes take their class count from the data
(`num_classes: null` instead of 50 / 10).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BEFORE = Path(__file__).resolve().parent / "resolved_before"
PHASES = sorted(p.stem for p in BEFORE.glob("*.yaml"))


def _resolved(argv: list[str], capsys) -> dict:
    from audioclip.tasks.cli import run_lightning_cli

    with pytest.raises(SystemExit) as done:
        run_lightning_cli(["fit", *argv, "--print_config"])
    assert done.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def _as_now(before: dict, phase: str) -> dict:
    """The snapshot with the three deliberate changes applied (see the module docstring)."""
    expected = copy.deepcopy(before)
    model = expected["model"]["init_args"]
    model["optimizer"] = {
        "class_path": "torch.optim.SGD",
        "init_args": {"lr": model.pop("lr"), "momentum": model.pop("momentum"), "nesterov": True,
                      "weight_decay": model.pop("weight_decay")},
    }  # fmt: skip
    model["scheduler"] = {
        "class_path": "torch.optim.lr_scheduler.ExponentialLR",
        "init_args": {"gamma": model.pop("gamma")},
    }
    every = expected.pop("check_every_n_steps")
    expected["nonfinite_guard"] = {"skip": expected.pop("skip_nonfinite_loss"), "check_every_n_steps": every}
    expected["save_on_signal"]["check_every_n_steps"] = every
    expected["metrics_file"] = {"filename": "test_metrics.json"}
    if phase.endswith("-audio-head"):
        model["num_classes"] = None
    return expected


def _only_keys_of(actual: dict, expected: dict) -> dict:
    """`actual` restricted to the optimiser/scheduler arguments the snapshot names (torch adds its own defaults)."""
    out = copy.deepcopy(actual)
    for name in ("optimizer", "scheduler"):
        given = out["model"]["init_args"][name]["init_args"]
        keep = expected["model"]["init_args"][name]["init_args"]
        out["model"]["init_args"][name]["init_args"] = {k: given[k] for k in keep if k in given}
    return out


@pytest.mark.parametrize("phase", PHASES)
def test_each_phase_resolves_to_its_settings_before_the_groups(phase, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    before = yaml.safe_load((BEFORE / f"{phase}.yaml").read_text())
    expected = _as_now(before, phase)
    actual = _resolved(["--config", f"conf/{phase}.yaml"], capsys)
    assert _only_keys_of(actual, expected) == expected
    # the shared trainer file given first as well (the way the Makefile and the docs used to call it) changes nothing
    assert _resolved(["--config", "conf/trainer.yaml", "--config", f"conf/{phase}.yaml"], capsys) == actual


def test_no_phase_file_repeats_a_data_or_optimiser_block():
    """The ESC-50, US8K, AudioSet and own-data blocks and the optimiser live in their group files only."""
    for path in sorted((ROOT / "conf").glob("*.yaml")):
        text = path.read_text()
        assert "class_path: audioclip.data" not in text, path.name
        assert "class_path: torch.optim" not in text, path.name


def test_a_missing_group_file_is_one_line_naming_it(tmp_path, capsys):
    phase = tmp_path / "phase.yaml"
    phase.write_text("defaults: [data/nowhere.yaml]\n")
    from audioclip.cli import main

    assert main(["fit", "--config", str(phase)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"audioclip: error: --config {phase}: defaults: data/nowhere.yaml: no such file "
                   f"({tmp_path / 'data' / 'nowhere.yaml'})"]  # fmt: skip
