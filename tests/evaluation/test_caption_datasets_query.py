"""`audioclip evaluate query --dataset clotho|audiocaps`: the official test split, every caption a text query and
every clip an audio query whose relevant results are all five of its captions; AudioCaps clips without audio are
left out and said so; bad requests end in one line."""

from __future__ import annotations

import importlib
import json
import math

import pytest
import torch
from caption_datasets import captions_of, write_audiocaps_copy, write_audiocaps_csv, write_clotho

import audioclip
from audioclip.cli import main
from audioclip.data.captions import fetch_audiocaps
from audioclip.evaluation import embed_dataset
from audioclip.evaluation.cli import _caption_query
from audioclip.evaluation.embedded import EmbeddedSet

# the module, not the function of the same name that audioclip.evaluation exports
zeroshot_module = importlib.import_module("audioclip.evaluation.zeroshot")


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(map(str, argv)))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_clotho_test_split_embeds_every_clip_with_its_five_captions(tmp_path, tiny_checkpoint):
    root = write_clotho(tmp_path / "clotho")
    data = embed_dataset(audioclip.load(tiny_checkpoint), "clotho", root, progress=False)
    assert data.task == "caption" and data.ids == [f"evaluation sound {k}.wav" for k in range(3)]
    assert data.class_names == [text for clip in range(3) for text in captions_of("test", clip)]
    assert data.labels == [(0, 1, 2, 3, 4), (5, 6, 7, 8, 9), (10, 11, 12, 13, 14)]
    relevant = data.caption_relevance()
    assert relevant.shape == (15, 3) and relevant.sum(0).tolist() == [5, 5, 5] and relevant.sum(1).eq(1).all()


def _unit(*values: float) -> list[float]:
    rest = math.sqrt(1 - sum(v * v for v in values))
    return [*values, rest, 0.0]


def test_an_audio_query_finds_its_clip_through_any_of_its_captions(monkeypatch):
    """Two clips, five captions each. Clip 0's nearest caption is its 4th, clip 1's its 3rd: a2t R@1 is 1 only
    when every caption of a clip counts (its first caption alone would give 0). Caption 1 of clip 0 and caption 4 of
    clip 1 lie nearer the other clip: t2a R@1 = 8 / 10."""
    audio = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    text = torch.tensor(
        [_unit(0.5, 0.2), _unit(0.2, 0.5), _unit(0.6, 0.1), [1.0, 0, 0, 0], _unit(0.4, 0.3)]
        + [_unit(0.1, 0.6), _unit(0.2, 0.4), [0, 1.0, 0, 0], _unit(0.3, 0.5), _unit(0.45, 0.35)]
    )
    captions = [f"caption {k}" for k in range(10)]
    data = EmbeddedSet("clotho", "-", captions, [(0, 1, 2, 3, 4), (5, 6, 7, 8, 9)], [0, 0], ["a", "b"],
                       {"audio": audio})  # fmt: skip
    monkeypatch.setattr(zeroshot_module, "class_text_embeddings", lambda model, names, templates: text)
    result = _caption_query(None, data, ["{}"], {})
    t2a, a2t = result["results"]
    assert (t2a["query"], t2a["num_queries"], a2t["query"], a2t["num_queries"]) == ("text", 10, "audio", 2)
    assert t2a["r@1"] == pytest.approx(0.8) and a2t["r@1"] == 1.0
    # t2a mAP@10: the two misses rank their clip 2nd: (8 + 1/2 + 1/2) / 10
    assert t2a["map@10"] == pytest.approx(0.9)
    # clip 0 ranks captions 3, 2, 0, 9, 4, 8, 1, 6 (1 and 6 tie at 0.2: the earlier result first), 5, 7: its own at
    # ranks 1, 2, 3, 5, 7, AP@10 = (1 + 1 + 1 + 4/5 + 5/7) / 5. Clip 1 ranks 7, 5, 1, 8 (1 and 8 tie at 0.5), 6, 9,
    # 4, 0, 2, 3: its own at ranks 1, 2, 4, 5, 6, AP@10 = (1 + 1 + 3/4 + 4/5 + 5/6) / 5
    expected = ((3 + 4 / 5 + 5 / 7) / 5 + (2 + 3 / 4 + 4 / 5 + 5 / 6) / 5) / 2
    assert a2t["map@10"] == pytest.approx(expected) and a2t["r@5"] == 1.0
    assert result["num_captions"] == 10 and "2 clips, 10 captions" in result["evaluated_on"]


def test_evaluate_query_on_clotho_writes_both_directions(tmp_path, tiny_checkpoint, capsys):
    root = write_clotho(tmp_path / "clotho", {"test": 3})
    code, out, _ = run(capsys, "evaluate", "query", "--dataset", "clotho", "--root", root, "--checkpoint",
                       tiny_checkpoint, "--out", tmp_path / "eval")  # fmt: skip
    assert code == 0 and "text -> audio" in out and "mAP@10" in out
    result = json.loads((tmp_path / "eval" / "query-clotho" / "results.json").read_text())
    rows = {(row["query"], row["result"]): row for row in result["results"]}
    assert rows["text", "audio"]["num_queries"] == 15 and rows["audio", "text"]["num_queries"] == 3
    assert rows["text", "audio"]["r@5"] == 1.0  # 3 clips: every caption's clip is in its top 5
    assert result["evaluated_on"] == "the official test split (3 clips, 15 captions)" and result["data"] == "synthetic"


def test_evaluate_query_on_audiocaps_leaves_out_and_names_the_clips_without_audio(tmp_path, tiny_checkpoint, capsys):
    root = tmp_path / "audiocaps"
    write_audiocaps_csv(root, "test", clips=3)
    fetch_audiocaps(root, "test", clips=write_audiocaps_copy(tmp_path / "copy", range(2)))
    code, _, _ = run(capsys, "evaluate", "query", "--dataset", "audiocaps", "--root", root, "--checkpoint",
                     tiny_checkpoint, "--out", tmp_path / "eval")  # fmt: skip
    result = json.loads((tmp_path / "eval" / "query-audiocaps" / "results.json").read_text())
    assert code == 0 and result["left_out"] == ["tiny0000002_30"]
    assert result["evaluated_on"] == "the official test split (2 clips, 10 captions; 1 clip(s) without audio left out)"
    assert [row["num_queries"] for row in result["results"]] == [10, 2]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("zeroshot", "--dataset", "clotho"), "clotho: a caption dataset has no classes; use `audioclip evaluate"),
        (("query", "--dataset", "clotho", "--fold", "1"), "clotho has no folds; it is evaluated on its official test"),
    ],
)
def test_caption_datasets_refuse_what_they_do_not_have_in_one_line(tmp_path, tiny_checkpoint, capsys, argv, message):
    root = write_clotho(tmp_path / "clotho", {"test": 1})
    code, _, err = run(capsys, "evaluate", *argv, "--root", root, "--checkpoint", tiny_checkpoint, "--out", tmp_path)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err
