"""Querying metrics: torchmetrics' P@1 / R@1 / mAP agree with a plain NumPy computation, and the
average is the same when the queries are split over 2 DDP ranks (gloo on CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gloo import gloo_group, spawn

from audioclip.evaluation.embedded import EmbeddedSet
from audioclip.evaluation.query import default_pairs, precision_recall_curve, query, retrieval_metrics

# Recall@k and mAP@10 are checked against NumPy in their own test
RETRIEVAL = ("recall@1", "recall@5", "recall@10", "map@10")


def numpy_retrieval(scores: np.ndarray, relevant: np.ndarray) -> dict[str, float]:
    """The definitions of the README, one query at a time; queries without a relevant result are left out."""
    p1, r1, ap, ap10 = [], [], [], []
    recall_at = {1: [], 5: [], 10: []}
    for s, rel in zip(scores, relevant, strict=True):
        if not rel.any():
            continue
        ranked = rel[np.argsort(-s, kind="stable")]
        p1.append(float(ranked[0]))
        r1.append(ranked[0] / rel.sum())
        hits = np.flatnonzero(ranked)
        ap.append(np.mean([(k + 1) / (pos + 1) for k, pos in enumerate(hits)]))
        for k in (1, 5, 10):
            recall_at[k].append(float(ranked[:k].any()))
        top = hits[hits < 10]  # AP@10: precision at each relevant rank in the top 10, over min(10, relevant)
        ap10.append(sum((n + 1) / (pos + 1) for n, pos in enumerate(top)) / min(10, rel.sum()))
    return {"p@1": np.mean(p1), "r@1": np.mean(r1), "map": np.mean(ap), "map@10": np.mean(ap10),
            **{f"recall@{k}": np.mean(v) for k, v in recall_at.items()}}  # fmt: skip


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_torchmetrics_retrieval_matches_numpy_on_random_scores(seed):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(40, 70))
    relevant = rng.random((40, 70)) < 0.15
    relevant[3] = False  # a query with nothing relevant is skipped, not counted as zero
    relevant[5] = True  # every result relevant: P@1 = AP = 1
    ours = retrieval_metrics(torch.from_numpy(scores), torch.from_numpy(relevant), torch.arange(40))
    expected = numpy_retrieval(scores, relevant)
    for name in ("p@1", "r@1", "map", "recall@1", "recall@5", "recall@10", "map@10"):
        assert ours[name] == pytest.approx(expected[name], abs=1e-6), name
    assert 0 < ours["recall@1"] < ours["recall@5"] < ours["recall@10"] < 1  # the random scores tell k apart


def test_precision_recall_curve_is_one_for_a_perfect_ranking_and_starts_at_the_best_precision():
    relevant = torch.tensor([[True, True, False, False], [False, True, False, True]])
    perfect = relevant.float()
    assert precision_recall_curve(perfect, relevant)["precision"] == pytest.approx([1.0] * 11)
    worst = 1 - perfect
    curve = precision_recall_curve(worst, relevant)["precision"]
    assert curve[0] == pytest.approx(0.5) and curve[-1] == pytest.approx(0.5)


def test_precision_recall_curve_without_any_relevant_result_is_zero():
    curve = precision_recall_curve(torch.rand(2, 3), torch.zeros(2, 3, dtype=torch.bool))
    assert curve["recall"] == pytest.approx([k / 10 for k in range(11)]) and curve["precision"] == [0.0] * 11


def _two_modality_set(n: int = 24, classes: int = 4, seed: int = 0) -> EmbeddedSet:
    gen = torch.Generator().manual_seed(seed)
    labels = [(i % classes,) for i in range(n)]
    audio = torch.nn.functional.normalize(torch.randn(n, 16, generator=gen), dim=-1)
    image = torch.nn.functional.normalize(torch.randn(n, 16, generator=gen), dim=-1)
    return EmbeddedSet("audioset", "-", [f"c{i}" for i in range(classes)], labels, [0] * n,
                       [str(i) for i in range(n)], {"audio": audio, "image": image})  # fmt: skip


def test_sample_queries_use_label_set_equality_as_relevance():
    data = _two_modality_set()
    data.embeddings["image"] = data.embeddings["audio"].clone()  # each clip's frame is its nearest image
    row = query(None, data, "audio", "image")
    # the top result is the query's own pair: relevant; 6 relevant images per query
    assert row["p@1"] == 1.0 and row["r@1"] == pytest.approx(1 / 6) and row["num_queries"] == 24


def test_query_result_fields_pairs_and_errors():
    data = _two_modality_set(n=4, classes=2)
    data.labels[3] = (0, 1)  # a label set of its own, relevant to nothing else
    data.embeddings["image"] = data.embeddings["audio"].clone()
    row = query(None, data, "audio", "image")
    assert {k: v for k, v in row.items() if k not in ("p@1", "r@1", "map", "pr_curve", *RETRIEVAL)} == {
        "query": "audio", "result": "image", "num_queries": 4, "num_results": 4, "num_queries_with_relevant": 4,
    }  # fmt: skip
    # each clip's own image ranks first; clips 0 and 2 share a class (2 relevant images), 1 and 3 have one each
    assert row["p@1"] == 1.0 and row["r@1"] == pytest.approx((1 / 2 + 1 + 1 / 2 + 1) / 4)
    assert len(row["pr_curve"]["precision"]) == 11
    assert default_pairs(data) == [("text", "audio"), ("text", "image"), ("audio", "text"), ("audio", "image"),
                                   ("image", "text"), ("image", "audio")]  # fmt: skip
    with pytest.raises(ValueError, match="^query and result modality are both audio; pick two different ones$"):
        query(None, data, "audio", "audio")
    audio_only = EmbeddedSet("esc50", "-", ["a"], [(0,)], [1], ["x"], {"audio": data.embeddings["audio"][:1]})
    with pytest.raises(ValueError, match="^esc50 has no image; its modalities are text, audio$"):
        query(None, audio_only, "image", "audio")


def _ddp_worker(rank: int, store: Path, out: Path) -> None:
    with gloo_group(rank, 2, store):
        row = query(None, _two_modality_set(), "audio", "image")
        torch.save(row, out / f"rank{rank}.pt")


@pytest.mark.ddp
def test_query_metrics_are_the_same_when_queries_are_split_over_two_ranks(tmp_path):
    spawn(_ddp_worker, tmp_path, tmp_path)
    single = query(None, _two_modality_set(), "audio", "image")
    for rank in range(2):
        ranked = torch.load(tmp_path / f"rank{rank}.pt")
        for name in ("p@1", "r@1", "map"):
            assert ranked[name] == pytest.approx(single[name], abs=1e-6), (rank, name)
