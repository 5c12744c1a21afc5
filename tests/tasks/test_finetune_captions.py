"""`make finetune-clotho` and `make finetune-audiocaps` end to end with the tiny model on tiny trees in the official
layouts: the official splits, the checkpoint selected on validation t2a mAP@10, retrieval of every caption tested."""

import json
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from caption_datasets import write_audiocaps_copy, write_audiocaps_csv, write_clotho
from optim_group import sgd
from test_make_targets import _make

from audioclip.data.captions import fetch_audiocaps
from audioclip.tasks import FolderFinetuneModule

TINY = (
    "--model.init_args.model audioclip-tiny --trainer.max_epochs 1 --trainer.accelerator cpu --trainer.devices 1 "
    "--data.init_args.batch_size 2 --data.init_args.num_workers 0 --trainer.enable_progress_bar false "
    "--data.init_args.clip_seconds 1 --trainer.limit_train_batches 2 --trainer.num_sanity_val_steps 0"
)


def _finetune(tmp_path, target: str, data) -> dict:
    done = _make(target, f"DATA={data}", "INIT=", f"RUNS={tmp_path / 'runs'}", f"ARGS={TINY}")
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / target / "main"
    assert (run / "checkpoints" / "last.ckpt").is_file() and list((run / "wandb").glob("offline-run-*"))
    assert "audioclip.data.CaptionDataModule" in (run / "config.yaml").read_text()
    return json.loads((run / "test_metrics.json").read_text())


def test_finetune_clotho_selects_on_validation_and_tests_every_caption_of_the_evaluation_split(tmp_path):
    metrics = _finetune(tmp_path, "finetune-clotho", write_clotho(tmp_path / "clotho"))
    assert "-val_t2a_map@10=" in metrics["checkpoint"] and metrics["data"] == "synthetic"
    for direction in ("t2a", "a2t"):
        for name in ("r@1", "r@5", "r@10", "map@10"):
            assert 0.0 <= metrics[f"test/{direction}_{name}"] <= 1.0
    # 3 test clips: each of the 15 captions finds its clip within its top 5
    assert metrics["test/t2a_r@5"] == 1.0


def test_finetune_audiocaps_runs_on_the_clips_the_audioset_downloader_fetched(tmp_path):
    root = tmp_path / "audiocaps"
    copy = write_audiocaps_copy(tmp_path / "copy", range(9))
    for split, clips in (("train", range(4)), ("val", range(4, 6)), ("test", range(6, 9))):
        write_audiocaps_csv(root, split, clips)
        fetch_audiocaps(root, split, clips=copy)
    metrics = _finetune(tmp_path, "finetune-audiocaps", root)
    assert metrics["test/t2a_r@5"] == 1.0 and "test/a2t_map@10" in metrics


class TwoCaptionsEach:
    """A caption datamodule's view for the metrics: clip k has the captions 'k first' and 'k second'."""

    def caption_texts(self, target: int) -> tuple[str, ...]:
        return (f"{target} first", f"{target} second")


def test_validation_retrieval_counts_every_caption_of_a_clip(monkeypatch):
    """Clip 0's audio is its second caption's text, clip 1's its first's; every other caption lies between the two
    clips. An audio query is a hit at rank 1 only when every caption of its clip is relevant (the first alone
    would miss clip 0): a2t R@1 = 1. Text queries: '0 first' sits nearer clip 1, the others nearer their own clip:
    t2a R@1 = 3 / 4."""
    module = FolderFinetuneModule(model="audioclip-tiny", task="caption", **sgd())
    monkeypatch.setattr(FolderFinetuneModule, "trainer", property(lambda self: SimpleNamespace(
        datamodule=TwoCaptionsEach())))  # fmt: skip
    vectors = {"0 first": [0.2, 0.9], "0 second": [1.0, 0.0], "1 first": [0.0, 1.0], "1 second": [0.6, 0.7]}
    monkeypatch.setattr(
        module, "_caption_embeddings", lambda texts: F.normalize(torch.tensor([vectors[t] for t in texts]), dim=-1)
    )
    logged = {}
    monkeypatch.setattr(module, "log", lambda name, value, **kwargs: logged.__setitem__(name, value))
    module._eval_audio, module._eval_ids = [torch.tensor([[1.0, 0.0], [0.0, 1.0]])], [torch.tensor([0, 1])]
    module._caption_metrics("val")
    assert logged["val/a2t_r@1"] == 1.0 and logged["val/t2a_r@1"] == 0.75
