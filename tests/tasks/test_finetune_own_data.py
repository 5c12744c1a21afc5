"""`make finetune DATA=...` on your own data end to end with the tiny model: a class-folder tree mixing
sample rates, channel counts, lengths and formats, a caption manifest, a multi-label manifest with FOLD; bad layouts
stop with one line."""

import json

import torch
from test_make_targets import _make

import audioclip
from audioclip.data.synthetic import write_caption_manifest, write_folder_tree, write_labels_manifest

TINY = (
    "--model.init_args.model audioclip-tiny --trainer.max_epochs 1 --trainer.accelerator cpu --trainer.devices 1 "
    "--data.init_args.batch_size 2 --data.init_args.num_workers 0 --trainer.enable_progress_bar false "
    "--data.init_args.clip_seconds 1 --data.init_args.max_seconds 2 --trainer.limit_train_batches 2 "
    "--trainer.num_sanity_val_steps 0 --data.init_args.val_fraction 0.34"
)


def _finetune(tmp_path, data, *extra: str) -> None:
    done = _make("finetune", f"DATA={data}", "INIT=", f"RUNS={tmp_path / 'runs'}", f"ARGS={TINY}", *extra)
    assert done.returncode == 0, done.stderr[-3000:]


def _run_dir(tmp_path, name: str):
    run = tmp_path / "runs" / "finetune" / name
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "wandb").glob("offline-run-*")), "no W&B run"
    return run, json.loads((run / "test_metrics.json").read_text())


def test_finetune_on_a_class_folder_tree_mixing_rates_channels_lengths_and_formats(tmp_path):
    # 16 kHz stereo and 44.1 kHz mono clips of 1-8 s in WAV, FLAC, OGG and MP3, some in nested folders
    tree = write_folder_tree(tmp_path / "tree", clips_per_class=4, classes=3)
    _finetune(tmp_path, tree)
    run, metrics = _run_dir(tmp_path, "tree")
    assert 0.0 <= metrics["test/acc"] <= 1.0
    config = (run / "config.yaml").read_text()
    assert "audioclip.data.AudioFolderDataModule" in config and f"root: {tree}" in config


def test_finetune_on_a_caption_manifest_reports_retrieval_both_ways(tmp_path):
    manifest = write_caption_manifest(tmp_path / "captions", clips_per_class=4, classes=2)
    _finetune(tmp_path, manifest)
    _, metrics = _run_dir(tmp_path, "captions")
    assert "-val_t2a_map@10=" in metrics["checkpoint"]  # the best checkpoint on the caption metric
    for direction in ("t2a", "a2t"):
        for name in ("r@1", "r@5", "r@10", "map@10"):
            assert 0.0 <= metrics[f"test/{direction}_{name}"] <= 1.0
    # 4 test clips: every relevant clip is in the top 10
    assert metrics["test/t2a_r@10"] == 1.0


def test_finetune_on_a_multilabel_manifest_with_a_test_fold_reports_map(tmp_path):
    manifest = write_labels_manifest(tmp_path / "mixes", clips=12, classes=3)
    _finetune(tmp_path, manifest, "FOLD=2")
    run, metrics = _run_dir(tmp_path, "labels-fold2")
    assert 0.0 < metrics["test/map"] <= 1.0
    assert "fold: 2" in (run / "config.yaml").read_text()
    # the fine-tuned checkpoint is read like any other (evaluate, index, classify); its multi-label head beside it
    checkpoint = torch.load(metrics["checkpoint"], map_location="cpu", weights_only=True)
    assert all(key.startswith("model.") for key in checkpoint["state_dict"])
    assert set(checkpoint["multilabel_head"]) == {"label_log_scale", "label_bias"}
    assert audioclip.load(metrics["checkpoint"]).model_name == "audioclip-tiny"


def test_finetune_on_a_bad_layout_stops_with_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    done = _make("finetune", f"DATA={tmp_path / 'empty'}", "INIT=", f"RUNS={tmp_path / 'runs'}", f"ARGS={TINY}")
    errors = [line for line in done.stderr.splitlines() if line.startswith("audioclip: error:")]
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert len(errors) == 1 and f"{tmp_path / 'empty'}: no class folders" in errors[0]
    done = _make("finetune", f"RUNS={tmp_path / 'runs'}")
    assert done.returncode != 0 and "give DATA=" in done.stderr
