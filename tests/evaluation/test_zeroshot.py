"""`audioclip evaluate zeroshot` / `query` on the synthetic datasets with the tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import audioclip
from audioclip.cli import main
from audioclip.data.synthetic import write_esc50, write_us8k
from audioclip.evaluation import class_text_embeddings


@pytest.fixture(scope="module")
def esc50(tmp_path_factory):
    return write_esc50(tmp_path_factory.mktemp("esc50"), clips_per_class=5, classes=3, progress=False)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """An ImageFolder tree: 2 classes x 2 small images."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for folder in ("n001", "n002"):
        (root / folder).mkdir()
        for k in range(2):
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / folder / f"{k}.png")
    return root


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(map(str, argv)))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_zeroshot_on_every_fold_says_so_and_writes_per_fold_results(tiny_checkpoint, esc50, tmp_path, capsys):
    code, out, _ = run(capsys, "evaluate", "zeroshot", "--dataset", "esc50", "--root", esc50,
                       "--checkpoint", tiny_checkpoint, "--out", tmp_path)  # fmt: skip
    assert code == 0
    assert "every fold (all 5 official folds = the whole dataset, 15 samples)" in out
    result = json.loads((tmp_path / "zeroshot-esc50" / "results.json").read_text())
    assert result["folds"] == [1, 2, 3, 4, 5] and result["num_samples"] == 15
    assert set(result["fold_accuracy"]) == {"1", "2", "3", "4", "5"}
    assert np.array(result["confusion"]).sum() == 15 and result["class_names"] == ["dog", "rooster", "pig"]
    assert result["accuracy"] == pytest.approx(np.trace(result["confusion"]) / 15)
    assert result["templates"] == ["{}"] and result["checkpoint"] == str(tiny_checkpoint)


def test_zeroshot_on_one_fold_says_only_that_fold(tiny_checkpoint, esc50, tmp_path, capsys):
    code, out, _ = run(capsys, "evaluate", "zeroshot", "--dataset", "esc50", "--root", esc50, "--fold", 2,
                       "--checkpoint", tiny_checkpoint, "--out", tmp_path, "--name", "fold2")  # fmt: skip
    assert code == 0 and "fold 2 of 5 only (3 samples)" in out
    assert json.loads((tmp_path / "fold2" / "results.json").read_text())["folds"] == [2]


def test_templates_are_averaged_as_open_clip_does(tiny_checkpoint):
    model = audioclip.load(tiny_checkpoint)
    names = ["dog", "rain"]
    single = class_text_embeddings(model, names, ["{}"])
    assert torch.allclose(single, audioclip.embed_text(model, names), atol=1e-6)
    pair = ["{}", "the sound of {}"]
    each = [audioclip.embed_text(model, names, t) for t in pair]
    mean = (each[0] + each[1]) / 2
    assert torch.allclose(class_text_embeddings(model, names, pair), mean / mean.norm(dim=-1, keepdim=True), atol=1e-6)


def test_zeroshot_on_us8k_with_several_templates(tiny_checkpoint, tmp_path, capsys):
    root = write_us8k(tmp_path / "us8k", clips_per_class=10, classes=2, progress=False)
    code, out, _ = run(capsys, "evaluate", "zeroshot", "--dataset", "us8k", "--root", root,
                       "--checkpoint", tiny_checkpoint, "--template", "{}", "--template", "the sound of {}",
                       "--out", tmp_path)  # fmt: skip
    assert code == 0 and "all 10 official folds" in out and "'the sound of {}'" in out
    assert len(json.loads((tmp_path / "zeroshot-us8k" / "results.json").read_text())["fold_accuracy"]) == 10


def test_query_text_and_audio_both_ways(tiny_checkpoint, esc50, tmp_path, capsys):
    code, out, _ = run(capsys, "evaluate", "query", "--dataset", "esc50", "--root", esc50,
                       "--checkpoint", tiny_checkpoint, "--out", tmp_path)  # fmt: skip
    assert code == 0 and "text -> audio" in out
    rows = json.loads((tmp_path / "query-esc50" / "results.json").read_text())["results"]
    assert [(r["query"], r["result"]) for r in rows] == [("text", "audio"), ("audio", "text")]
    text_audio, audio_text = rows
    assert text_audio["num_queries"] == 3 and text_audio["num_results"] == 15
    # 5 relevant clips per class: a right top-1 is 1/5 of the recall, and AP is at least that of ranking the 5
    # relevant clips last, (1/11 + 2/12 + ... + 5/15) / 5
    assert text_audio["r@1"] == pytest.approx(text_audio["p@1"] / 5)
    assert text_audio["map"] >= np.mean([k / (10 + k) for k in range(1, 6)]) - 1e-6
    # one relevant class name among 3 per clip: R@1 = P@1, and AP = 1 / (rank of the right name) >= 1/3
    assert audio_text["num_queries"] == 15 and audio_text["r@1"] == pytest.approx(audio_text["p@1"])
    assert audio_text["map"] >= max(audio_text["p@1"], 1 / 3) - 1e-6
    assert len(text_audio["pr_curve"]["precision"]) == 11


def test_imagefolder_zeroshot_with_a_class_name_file(tiny_checkpoint, images, tmp_path, capsys):
    names = tmp_path / "names.txt"
    names.write_text("n002\tgoldfish\nn001\ttench\n")
    code, out, _ = run(capsys, "evaluate", "zeroshot", "--dataset", "imagefolder", "--root", images,
                       "--class-names", names, "--checkpoint", tiny_checkpoint, "--out", tmp_path)  # fmt: skip
    assert code == 0 and "whole set (4 samples)" in out
    assert json.loads((tmp_path / "zeroshot-imagefolder" / "results.json").read_text())["class_names"] == [
        "tench",
        "goldfish",
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "esc5O"], "unknown dataset 'esc5O'; choose one of esc50, us8k, audioset, imagefolder"),
        (["--dataset", "esc50", "--fold", "7"], "--fold must be in 1..5 for esc50, got 7"),
        (["--dataset", "esc50", "--template", "the sound of"], "must contain '{}' exactly once"),
        (["--dataset", "imagefolder"], "--root: give the imagefolder location"),
    ],
)
def test_bad_arguments_are_one_line_errors(tiny_checkpoint, args, message, capsys):
    code, _, err = run(capsys, "evaluate", "zeroshot", "--checkpoint", tiny_checkpoint, *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_empty_folder_and_duplicate_class_names_are_one_line_errors(tiny_checkpoint, images, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "evaluate", "zeroshot", "--dataset", "imagefolder", "--root", tmp_path / "empty",
                       "--checkpoint", tiny_checkpoint)  # fmt: skip
    assert code == 2 and "empty" in err and len(err.strip().splitlines()) == 1
    names = tmp_path / "names.txt"
    names.write_text("crane\ncrane\n")
    code, _, err = run(capsys, "evaluate", "zeroshot", "--dataset", "imagefolder", "--root", images,
                       "--class-names", names, "--checkpoint", tiny_checkpoint)  # fmt: skip
    assert code == 2 and "duplicate class name(s) crane" in err and len(err.strip().splitlines()) == 1


def test_checkpoint_that_does_not_match_the_model_is_a_one_line_error(tiny_checkpoint, esc50, capsys):
    code, _, err = run(capsys, "evaluate", "zeroshot", "--dataset", "esc50", "--root", esc50,
                       "--checkpoint", tiny_checkpoint, "--model", "audioclip")  # fmt: skip
    assert code == 2 and "does not fit AudioCLIP" in err and len(err.strip().splitlines()) == 1
