"""AudioSet metadata readers on the real official files in shared/fixtures/meta."""

from pathlib import Path

import pytest

from audioclip.data.audioset.metadata import (
    DEFAULT_LABELS,
    NUM_CLASSES,
    Segment,
    label_indices,
    parse_shard,
    read_class_labels,
    read_ontology,
    read_segments,
    select_shard,
)


@pytest.fixture(scope="module")
def meta(shared_dir: Path) -> Path:
    return shared_dir / "fixtures" / "meta"


def test_class_labels_match_the_official_file_and_the_bundled_copy(meta: Path) -> None:
    classes = read_class_labels(meta / "class_labels_indices.csv")
    assert len(classes) == NUM_CLASSES
    assert (classes[0].mid, classes[0].display_name) == ("/m/09x0r", "Speech")
    assert classes[1].display_name == "Male speech, man speaking"  # the quoted comma survives
    assert read_class_labels(DEFAULT_LABELS) == classes


def test_segment_lists_parse_with_the_counts_of_their_header(meta: Path) -> None:
    evaluation = read_segments(meta / "eval_segments.csv")
    balanced = read_segments(meta / "balanced_train_segments.csv")
    assert len(evaluation) == 20_371 and len(balanced) == 22_160
    assert sum(len(s.mids) for s in evaluation) == 51_804
    first = evaluation[0]
    assert first == Segment("--4gqARaEJE", 0.0, 10.0, ("/m/068hy", "/m/07q6cd_", "/m/0bt9lr", "/m/0jbk"))
    classes = read_class_labels(meta / "class_labels_indices.csv")
    assert {i for s in evaluation for i in label_indices(s, classes)} == set(range(NUM_CLASSES))


def test_ontology_holds_every_class(meta: Path) -> None:
    ontology = read_ontology(meta / "ontology.json")
    assert len(ontology) == 632
    assert all(c.mid in ontology for c in read_class_labels(meta / "class_labels_indices.csv"))
    assert ontology["/m/09x0r"]["name"] == "Speech"


def test_bad_rows_are_errors_naming_the_file_and_row(tmp_path: Path) -> None:
    bad = tmp_path / "segments.csv"
    bad.write_text('# header\nabcdefghijk, 0.000, 10.000, "/m/09x0r"\nabcdefghijl, 0.000\n')
    with pytest.raises(ValueError, match=r"segments.csv: data row 2 has 2 fields"):
        read_segments(bad)
    with pytest.raises(ValueError, match=r"segment x: label /m/nope is not in"):
        label_indices(Segment("x", 0, 1, ("/m/nope",)), read_class_labels(DEFAULT_LABELS))


def test_shards_split_segments_disjointly_and_stably(meta: Path) -> None:
    segments = read_segments(meta / "eval_segments.csv")[:2000]
    parts = [select_shard(segments, (i, 4)) for i in range(4)]
    ids = [s.ytid for part in parts for s in part]
    assert sorted(ids) == sorted(s.ytid for s in segments)
    assert all(350 < len(part) < 650 for part in parts)
    assert select_shard(segments[:500], (1, 4)) == [s for s in parts[1] if s in segments[:500]]
    assert parse_shard("3/8") == (3, 8)
    with pytest.raises(ValueError, match="--shard"):
        parse_shard("4/4")
