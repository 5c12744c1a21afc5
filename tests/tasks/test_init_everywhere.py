"""One `INIT=` on every phase target: the weights a run starts from (a tag, a checkpoint, or a previous run folder).
It reaches the module on every target, the old names still work once with a warning, and an INIT or a class count
that does not fit the target is one line before anything is decoded or logged."""

import json
import time

import lightning as L
import pytest
import torch
import yaml
from optim_group import sgd
from test_make_targets import _make

from audioclip.data.synthetic import write_esc50
from audioclip.models import create_model
from audioclip.tasks import AudioPretrainModule, FinetuneModule

# target -> (the model setting INIT fills, extra make arguments the target needs)
TARGETS = {
    "finetune-esc50": ("init_from", ()),
    "finetune-us8k": ("init_from", ()),
    "finetune-esc50-audio-head": ("init_from", ()),
    "finetune-us8k-audio-head": ("init_from", ()),
    "finetune": ("init_from", ("DATA=my-sounds",)),
    "pretrain-audio": ("init_from", ()),
    "train-partial": ("audio_init_from", ()),
    "train-full": ("init_from", ()),
}


def _resolved_model(target: str, *args: str) -> tuple[dict, str]:
    done = _make(target, *args, "ARGS=--print_config")
    assert done.returncode == 0, done.stderr[-2000:]
    return yaml.safe_load(done.stdout[done.stdout.index("# lightning") :])["model"]["init_args"], done.stderr


@pytest.mark.parametrize("target", TARGETS)
def test_init_reaches_the_module_on_every_phase_target(target, tmp_path):
    setting, extra = TARGETS[target]
    model, _ = _resolved_model(target, *extra, f"RUNS={tmp_path}", f"INIT={tmp_path / 'mine.ckpt'}")
    assert model[setting] == str(tmp_path / "mine.ckpt")


@pytest.mark.parametrize(
    "target, old", [("finetune-esc50-audio-head", "INIT_AUDIO_HEAD"), ("train-partial", "INIT_PARTIAL"),
                    ("train-full", "INIT_FULL")],  # fmt: skip
)
def test_the_old_init_names_still_work_once_with_a_deprecation_warning(target, old, tmp_path):
    setting, _ = TARGETS[target]
    model, stderr = _resolved_model(target, f"RUNS={tmp_path}", f"{old}=x.ckpt")
    assert model[setting] == "x.ckpt"
    assert f"{old}=x.ckpt is deprecated and will be removed: use INIT=x.ckpt" in stderr


def test_without_init_each_target_takes_its_own_default(tmp_path):
    assert _resolved_model("finetune-esc50", f"RUNS={tmp_path}")[0]["init_from"] == "full"
    assert _resolved_model("finetune-esc50-audio-head", f"RUNS={tmp_path}")[0]["init_from"] == "esrnxfbsp"
    # the previous phase's run, once it exists
    (tmp_path / "train-partial" / "main" / "checkpoints").mkdir(parents=True)
    (tmp_path / "train-partial" / "main" / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert _resolved_model("train-full", f"RUNS={tmp_path}")[0]["init_from"] == str(tmp_path / "train-partial/main")
    # INIT= (empty) is random weights
    assert _resolved_model("finetune-esc50", f"RUNS={tmp_path}", "INIT=")[0]["init_from"] is None


def test_init_from_a_run_folder_starts_from_the_checkpoint_it_was_tested_with(tmp_path):
    torch.manual_seed(0)
    tested = {"model." + k: v for k, v in create_model("audioclip-tiny").state_dict().items()}
    run = tmp_path / "runs" / "finetune-esc50" / "fold1"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": tested}, run / "checkpoints" / "best-epoch3.ckpt")
    torch.save({"state_dict": {k: torch.zeros_like(v) for k, v in tested.items()}}, run / "checkpoints" / "last.ckpt")
    (run / "test_metrics.json").write_text(json.dumps({"checkpoint": str(run / "checkpoints" / "best-epoch3.ckpt")}))
    module = FinetuneModule(model="audioclip-tiny", init_from=str(run))
    assert all(torch.equal(v, tested["model." + k]) for k, v in module.model.state_dict().items())


@pytest.fixture(scope="module")
def esc50(tmp_path_factory):
    return write_esc50(tmp_path_factory.mktemp("esc50") / "esc50", clips_per_class=3, classes=4, progress=False)


def _refused_before_anything_runs(done, runs, data) -> str:
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("audioclip: error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr
    assert not (data / ".audioclip-cache").exists()  # nothing decoded
    assert not list(runs.rglob("wandb"))  # no W&B run
    return errors[0]


def test_a_whole_audioclip_as_the_audio_heads_init_is_one_line_before_anything_runs(esc50, tmp_path):
    full = tmp_path / "audioclip-tiny.pt"
    torch.save(create_model("audioclip-tiny").state_dict(), full)
    runs = tmp_path / "runs"
    done = _make("finetune-esc50-audio-head", f"DATA={esc50}", f"RUNS={runs}", f"INIT={full}",
                 "ARGS=--model.init_args.model esresnext-fbsp-tiny --trainer.accelerator cpu")  # fmt: skip
    line = _refused_before_anything_runs(done, runs, esc50)
    assert f"{full} holds a whole AudioCLIP" in line and "standalone audio head" in line


def test_an_init_that_does_not_exist_is_one_line_before_anything_runs(esc50, tmp_path):
    runs = tmp_path / "runs"
    done = _make("finetune-esc50", f"DATA={esc50}", f"RUNS={runs}", f"INIT={tmp_path / 'gone' / 'x.ckpt'}",
                 "ARGS=--model.init_args.model audioclip-tiny --trainer.accelerator cpu")  # fmt: skip
    line = _refused_before_anything_runs(done, runs, esc50)
    assert line == f"audioclip: error: init_from: {tmp_path / 'gone' / 'x.ckpt'}: no such file"


def test_a_class_count_that_is_not_the_datas_is_one_line_before_the_cache_is_decoded(esc50, tmp_path):
    runs, head = tmp_path / "runs", tmp_path / "esrnxfbsp-tiny.pt"
    torch.save(create_model("esresnext-fbsp-tiny").state_dict(), head)  # AudioSet's 527 classes
    started = time.monotonic()
    done = _make("finetune-esc50-audio-head", f"DATA={esc50}", f"RUNS={runs}", f"INIT={head}",
                 "ARGS=--model.init_args.model esresnext-fbsp-tiny --model.init_args.num_classes 7 "
                 "--trainer.accelerator cpu")  # fmt: skip
    seconds = time.monotonic() - started
    line = _refused_before_anything_runs(done, runs, esc50)
    assert line == ("audioclip: error: model.num_classes: the classifier has 7 outputs but the dataset has 4 classes "
                    "(leave num_classes out to take the data's)")  # fmt: skip
    print(f"refused after {seconds:.1f} s (make, Python start-up and the imports included)")


def test_the_audio_head_takes_its_class_count_from_the_data(esc50, tmp_path):
    from audioclip.data import ESC50DataModule

    module = AudioPretrainModule(model="esresnext-fbsp-tiny", multilabel=False, imagenet_init=False, **sgd())
    data = ESC50DataModule(esc50, fold=1, batch_size=4, num_workers=0, progress=False)
    module.check_fits_data(data)  # no fixed count: nothing to refuse
    assert data.declared_class_names() == ["dog", "rooster", "pig", "cow"]
    trainer = L.Trainer(accelerator="cpu", max_epochs=0, logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(module, datamodule=data)
    assert module.model.fc.out_features == 4 and module.hparams.num_classes == 4
