"""Training phases end to end on the tiny model: configs parse, a fit logs to W&B offline, a run resumes."""

import json
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from optim_group import sgd
from wandb_offline import wandb_run

from audioclip.data.synthetic import write_esc50
from audioclip.tasks import AudioPretrainModule, FinetuneModule, FullTrainingModule, PartialTrainingModule
from audioclip.tasks.base import no_weight_decay
from audioclip.tasks.cli import run_lightning_cli

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p.name for p in (ROOT / "conf").glob("*.yaml") if p.name != "trainer.yaml")


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_parses_and_opens_with_a_comment(name, capsys):
    text = (ROOT / "conf" / name).read_text()
    assert text.startswith("# ") and "Run:" in text
    # --print_config parses and type-checks every key without instantiating anything, then exits
    with pytest.raises(SystemExit) as done:
        run_lightning_cli(
            [
                "fit",
                "--config",
                str(ROOT / "conf/trainer.yaml"),
                "--config",
                str(ROOT / "conf" / name),
                "--print_config",
            ]
        )
    assert done.value.code in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["class_path"].startswith("audioclip.tasks.")
    assert config["trainer"]["logger"]["init_args"]["project"] == "audioclip"


def test_a_misspelled_config_key_fails_before_anything_runs(capsys):
    with pytest.raises(SystemExit) as done:
        run_lightning_cli(
            [
                "fit",
                "--config",
                str(ROOT / "conf/trainer.yaml"),
                "--config",
                str(ROOT / "conf/demo.yaml"),
                "--model.init_args.learning_rate",
                "0.1",
                "--print_config",
            ]
        )
    assert done.value.code != 0
    assert "learning_rate" in capsys.readouterr().err


def test_parameter_groups_exclude_fbsp_and_logit_scales_from_weight_decay():
    module = FullTrainingModule(model="audioclip-tiny", **sgd())
    optimizer = module.configure_optimizers()["optimizer"]
    decayed, free = optimizer.param_groups
    names = {id(p): n for n, p in module.model.named_parameters()}
    assert decayed["weight_decay"] == 5e-4 and free["weight_decay"] == 0.0
    assert {names[id(p)] for p in free["params"]} == {
        "logit_scale",
        "logit_scale_ai",
        "logit_scale_at",
        "audio.fbsp.m",
        "audio.fbsp.fb",
        "audio.fbsp.fc",
    }
    assert optimizer.defaults["nesterov"] and optimizer.defaults["momentum"] == 0.9
    assert not no_weight_decay("audio.fc.weight")


def test_partial_training_freezes_clip_heads_and_keeps_them_in_eval_mode(tmp_path):
    torch.save({}, tmp_path / "unused.pt")
    module = PartialTrainingModule(model="audioclip-tiny", init_from=None)
    module.train()
    assert not module.model.visual.training and not module.model.transformer.training
    assert module.model.audio.training
    trainable = {n.split(".")[0] for n, p in module.model.named_parameters() if p.requires_grad}
    assert trainable == {"audio", "logit_scale_ai", "logit_scale_at"}


def test_modules_refuse_the_wrong_kind_of_model():
    with pytest.raises(ValueError, match="model: AudioPretrainModule trains a standalone audio head"):
        AudioPretrainModule(model="audioclip-tiny")
    with pytest.raises(ValueError, match="model: FinetuneModule needs an AudioCLIP model.*AudioPretrainModule"):
        FinetuneModule(model="esresnext-fbsp-tiny")


@pytest.fixture(scope="module")
def esc50_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("esc50")
    write_esc50(root, clips_per_class=4, classes=4, seed=0)
    return root


def _fit(root, run_dir, *extra):
    return run_lightning_cli(
        [
            "fit",
            "--config",
            str(ROOT / "conf/trainer.yaml"),
            "--config",
            str(ROOT / "conf/demo.yaml"),
            "--data.init_args.root",
            str(root),
            "--data.init_args.num_workers",
            "0",
            "--data.init_args.persistent_workers",
            "false",
            "--data.init_args.batch_size",
            "4",
            "--trainer.default_root_dir",
            str(run_dir),
            "--trainer.logger.init_args.save_dir",
            str(run_dir),
            "--trainer.enable_progress_bar",
            "false",
            *extra,
        ]
    )


def test_tiny_fit_writes_config_checkpoints_test_metrics_and_wandb_summary(esc50_root, tmp_path):
    run = tmp_path / "run"
    cli = _fit(esc50_root, run, "--trainer.max_epochs", "2")
    assert (run / "config.yaml").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert any(p.name.startswith("best-") for p in (run / "checkpoints").iterdir())
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert Path(metrics["checkpoint"]).name.startswith("best-")  # tested: the checkpoint selected on validation
    # the reported accuracy is that checkpoint's (that training raises it above chance: tests/tasks/test_learning.py)
    tester = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    again = tester.test(cli.model, datamodule=cli.datamodule, ckpt_path=metrics["checkpoint"], verbose=False)
    assert again[0]["test/acc"] == pytest.approx(metrics["test/acc"])
    assert cli.trainer.global_step > 0

    keys = json.dumps(wandb_run(run))
    for key in ("train/loss_step", "val/acc", "test/acc", "test/predictions", "test/confusion_matrix"):
        assert key in keys, key
    assert "FinetuneModule" in keys  # the resolved config reached wandb.config


def test_resumed_run_continues_from_the_saved_step(esc50_root, tmp_path):
    run = tmp_path / "run"
    first = _fit(esc50_root, run, "--trainer.max_epochs", "1")
    steps_one_epoch = first.trainer.global_step
    ckpt = run / "checkpoints" / "last.ckpt"
    resumed = _fit(esc50_root, run, "--trainer.max_epochs", "2", "--ckpt_path", str(ckpt))
    assert resumed.trainer.global_step == 2 * steps_one_epoch
    assert resumed.trainer.current_epoch == 2


def test_bf16_channels_last_fit_from_the_command_line(esc50_root, tmp_path):
    run = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = _fit(
            esc50_root,
            run,
            "--trainer.max_epochs",
            "1",
            "--trainer.precision",
            "bf16-mixed",
            "--trainer.callbacks+=audioclip.tasks.ChannelsLast",
        )
    # bf16-mixed is precision auto's choice on bf16 hardware: its log must not carry the model summary's size warning
    assert not [w for w in caught if "not supported by the model summary" in str(w.message)]
    conv = cli.model.model.audio.layer1[0].conv2.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert cli.trainer.precision == "bf16-mixed" and cli.trainer.global_step > 0
    assert all(torch.isfinite(p).all() for p in cli.model.parameters())
