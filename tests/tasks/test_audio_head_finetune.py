"""The standalone audio head fine-tuned on ESC-50 / UrbanSound8K (paper Tables 1 and 3, "Audio-Head" rows):
a 527-class AudioSet classifier gets a fresh classifier of the dataset's size, every other key loads strictly."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from audioclip.data.synthetic import write_us8k
from audioclip.models import create_model
from audioclip.models.pretrained import WeightsError
from audioclip.tasks import AudioPretrainModule

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def audioset_head(tmp_path_factory) -> Path:
    """A 527-class tiny ESResNeXt-fbsp, as an AudioSet-trained audio head (the layout of ESRNXFBSP.pt)."""
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("head") / "esrnxfbsp-tiny.pt"
    torch.save(create_model("esresnext-fbsp-tiny").state_dict(), path)
    return path


def test_new_classifier_is_fresh_and_every_other_key_is_loaded(audioset_head, caplog):
    saved = torch.load(audioset_head, weights_only=True)
    torch.manual_seed(0)
    fresh_fc = create_model("esresnext-fbsp-tiny", num_classes=10).fc.weight.clone()
    torch.manual_seed(0)
    with caplog.at_level(logging.INFO):
        module = AudioPretrainModule(
            model="esresnext-fbsp-tiny", num_classes=10, multilabel=False, init_from=str(audioset_head),
            new_classifier=True,
        )  # fmt: skip
    state = module.model.state_dict()
    assert state["fc.weight"].shape[0] == 10
    assert torch.equal(state["fc.weight"], fresh_fc)  # the model's own initialisation, not a slice of the 527
    assert all(torch.equal(state[k], v) for k, v in saved.items() if not k.startswith("fc."))
    (line,) = [r.getMessage() for r in caplog.records if "classifier" in r.getMessage()]
    assert "freshly initialised 10-class" in line and str(audioset_head) in line


def test_without_new_classifier_a_527_class_checkpoint_does_not_fit_10_classes(audioset_head):
    with pytest.raises(WeightsError, match=r"shape mismatch.*fc\.weight \(527, 256\) vs \(10, 256\)"):
        AudioPretrainModule(model="esresnext-fbsp-tiny", num_classes=10, multilabel=False, init_from=str(audioset_head))


def test_new_classifier_still_refuses_a_checkpoint_missing_a_body_key(audioset_head, tmp_path):
    state = torch.load(audioset_head, weights_only=True)
    del state["layer1.0.conv1.weight"]
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(WeightsError, match=r"missing keys \(1\): layer1\.0\.conv1\.weight"):
        AudioPretrainModule(
            model="esresnext-fbsp-tiny", num_classes=10, multilabel=False, init_from=str(tmp_path / "broken.pt"),
            new_classifier=True,
        )  # fmt: skip


def test_finetune_us8k_audio_head_target_runs_through_audioclip_fit(audioset_head, tmp_path):
    # 5 clips per class in folds 1-5: fold 2 tests, a quarter of the other 4 validates (one clip per class)
    data = write_us8k(tmp_path / "us8k", clips_per_class=5, classes=10, seed=0, progress=False)
    runs = tmp_path / "runs"
    args = (
        "--model.init_args.model esresnext-fbsp-tiny --model.init_args.optimizer.init_args.lr 0.01 "
        "--trainer.max_epochs 1 --trainer.accelerator cpu --trainer.devices 1 --data.init_args.batch_size 8 "
        "--data.init_args.num_workers 0 --data.init_args.val_fraction 0.25 "
        "--trainer.enable_progress_bar false"
    )
    venv = str(Path(sys.executable).parent.parent)
    done = subprocess.run(
        ["make", "--no-print-directory", f"VENV={venv}", "finetune-us8k-audio-head", "FOLD=2", f"DATA={data}",
         f"INIT={audioset_head}", f"RUNS={runs}", f"ARGS={args}"],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "offline"}, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "classifier fc replaced by a freshly initialised 10-class layer" in done.stderr
    run = runs / "finetune-us8k-audio-head" / "fold2"
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert Path(metrics["checkpoint"]).name.startswith("best-")  # selected on val/acc, as the other fine-tuning
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["state_dict"]["model.fc.weight"].shape[0] == 10
    assert ckpt["hyper_parameters"]["init_from"] == str(audioset_head)
    # a user's own state dict is variant `other`; the run records its data, folds and protocol
    assert (metrics["variant"], metrics["dataset"], metrics["data"]) == ("other", "us8k", "synthetic")
    assert (metrics["test_fold"], metrics["protocol"], metrics["result"]) == (2, "honest", "labels")
