"""`audioclip evaluate` / `index` / `search` on your own data: a class-folder tree, a multi-label and a
caption manifest, with the tiny model."""

import json
from pathlib import Path

import pytest
import torch

import audioclip
from audioclip.cli import main
from audioclip.data.synthetic import write_caption_manifest, write_folder_tree, write_labels_manifest
from audioclip.evaluation import embed_dataset, load_index
from audioclip.evaluation.index import labelled_media


@pytest.fixture(scope="module")
def own_data(tmp_path_factory):
    base = tmp_path_factory.mktemp("own")
    return {
        "tree": write_folder_tree(base / "tree", clips_per_class=3, classes=3),
        "labels": write_labels_manifest(base / "mixes", clips=9, classes=3),
        "captions": write_caption_manifest(base / "captions", clips_per_class=3, classes=2),
    }


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(map(str, argv)))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def evaluate(capsys, tmp_path, checkpoint, *argv):
    code, out, err = run(capsys, "evaluate", *argv, "--checkpoint", checkpoint, "--out", tmp_path, "--clip-seconds", 1)
    return code, out, err


def test_zeroshot_on_a_class_folder_tree(own_data, tiny_checkpoint, tmp_path, capsys):
    code, out, _ = evaluate(capsys, tmp_path, tiny_checkpoint, "zeroshot", "--dataset", "folder", "--root",
                            own_data["tree"])  # fmt: skip
    assert code == 0 and "Zero-shot folder (3 classes" in out and "whole set (9 samples)" in out
    result = json.loads((tmp_path / "zeroshot-tree" / "results.json").read_text())
    assert result["class_names"] == ["bird chirp", "engine drone", "low hum"]
    assert sum(result["class_counts"]) == 9 and 0.0 <= result["accuracy"] <= 1.0


def test_zeroshot_on_a_multilabel_manifest_is_map_and_a_fold_restricts_it(own_data, tiny_checkpoint, tmp_path, capsys):
    code, out, _ = evaluate(capsys, tmp_path, tiny_checkpoint, "zeroshot", "--dataset", "folder", "--manifest",
                            own_data["labels"], "--fold", 2)  # fmt: skip
    result = json.loads((tmp_path / "zeroshot-labels" / "results.json").read_text())
    assert code == 0 and "mAP audio" in out and 0.0 < result["map"]["audio"] <= 1.0
    assert result["num_samples"] == 2 and "fold 2" in result["evaluated_on"]  # clips 1 and 5 of 9 are in fold 2


def test_query_on_a_caption_manifest_scores_both_directions(own_data, tiny_checkpoint, tmp_path, capsys):
    code, out, _ = evaluate(capsys, tmp_path, tiny_checkpoint, "query", "--dataset", "folder", "--manifest",
                            own_data["captions"])  # fmt: skip
    assert code == 0 and "R@5" in out and "mAP@10" in out
    result = json.loads((tmp_path / "query-captions" / "results.json").read_text())
    rows = {(row["query"], row["result"]): row for row in result["results"]}
    assert set(rows) == {("text", "audio"), ("audio", "text")}
    assert rows["audio", "text"]["num_queries"] == 6 and rows["text", "audio"]["num_queries"] == result["num_captions"]
    # 6 clips: every clip is within the top 10 results of its caption
    assert rows["text", "audio"]["r@10"] == 1.0


def test_caption_embedded_set_labels_each_clip_with_its_own_caption(own_data, tiny_checkpoint):
    model = audioclip.load(tiny_checkpoint)
    data = embed_dataset(model, "folder", own_data["captions"], manifest=own_data["captions"], clip_seconds=1.0,
                         progress=False)  # fmt: skip
    expected = _captions(own_data["captions"])
    assert data.task == "caption" and len(data) == 6
    assert {i: data.class_names[labels[0]] for i, labels in zip(data.ids, data.labels, strict=True)} == expected
    assert torch.allclose(data.embeddings["audio"].norm(dim=-1), torch.ones(6), atol=1e-5)


def test_zeroshot_on_a_caption_manifest_points_to_query(own_data, tiny_checkpoint, tmp_path, capsys):
    code, _, err = evaluate(capsys, tmp_path, tiny_checkpoint, "zeroshot", "--dataset", "folder", "--manifest",
                            own_data["captions"])  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and "use `audioclip evaluate query`" in err


def _captions(manifest) -> dict[str, str]:
    """path -> caption of a manifest written by write_caption_manifest (captions are quoted: they hold commas)."""
    rows = [line.split('"') for line in manifest.read_text().splitlines()[1:]]
    return {row[0].rstrip(","): row[1] for row in rows}


def test_index_of_a_caption_manifest_stores_the_captions_and_search_shows_them(own_data, tiny_checkpoint, tmp_path,
                                                                            capsys):  # fmt: skip
    root = own_data["captions"].parent.resolve()
    captions = _captions(own_data["captions"])
    index = tmp_path / "captions.pt"
    code, out, _ = run(capsys, "index", own_data["captions"], "--out", index, "--checkpoint", tiny_checkpoint)
    assert code == 0 and "6 items (6 added" in out
    stored = load_index(index)
    paths = [str(Path(path).relative_to(root)) for path in stored["paths"]]
    assert dict(zip(paths, stored["labels"], strict=True)) == captions
    code, out, _ = run(capsys, "search", index, "--text", "a loud low hum", "--top", 6)
    assert code == 0 and len(out.splitlines()) == 6
    for line in out.splitlines():  # "  1. +0.1234  audio  [caption]  /path"
        label, path = line.split("[", 1)[1].split("]  ")
        assert captions[str(Path(path).relative_to(root))] == label



def test_index_labels_a_tree_by_class_folder_and_leaves_loose_files_unlabelled(own_data, tmp_path):
    labelled = labelled_media(own_data["tree"])
    assert len(labelled) == 9
    for path, modality, label in labelled:  # nested files (takes/) still carry their class folder
        assert modality == "audio" and path.relative_to(own_data["tree"].resolve()).parts[0] == label.replace(" ", "_")
    assert sorted({label for _, _, label in labelled}) == ["bird chirp", "engine drone", "low hum"]
    (tmp_path / "loose.wav").write_bytes((own_data["tree"] / "low_hum" / "low_hum-000.wav").read_bytes())
    assert [label for _, _, label in labelled_media(tmp_path)] == [""]
