"""The one retrieval metric (`audioclip.evaluation.retrieval`): R@k and mAP@10 worked out by hand on a 3-clip,
15-caption example, its tie rule, its rule for queries without a relevant result, its DDP reduction, and that the
querying table and search rank with it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from gloo import gloo_group, spawn

import audioclip
from audioclip.evaluation import fingerprint, search
from audioclip.evaluation import retrieval as retrieval_module
from audioclip.evaluation.query import retrieval_metrics
from audioclip.evaluation.retrieval import (
    caption_relevance,
    caption_retrieval,
    rank,
    retrieval_at_k,
    retrieval_at_k_across_ranks,
    retrieval_sums,
)

# 15 captions (rows) x 3 clips (columns A, B, C): captions 0-4 describe A, 5-9 B, 10-14 C. Every column's scores are
# distinct, so no tie rule is involved; the rankings below are read off these numbers by hand.
SCORES = torch.tensor([
    [0.90, 0.10, 0.011], [0.80, 0.20, 0.10], [0.70, 0.015, 0.20], [0.30, 0.60, 0.13], [0.20, 0.50, 0.40],  # A's
    [0.10, 0.33, 0.02], [0.40, 0.28, 0.03], [0.01, 0.25, 0.45], [0.05, 0.15, 0.105], [0.50, 0.12, 0.60],  # B's
    [0.95, 0.008, 0.99], [0.02, 0.009, 0.85], [0.03, 0.45, 0.80], [0.04, 0.40, 0.75], [0.06, 0.36, 0.70],  # C's
], dtype=torch.float64)  # fmt: skip
CLIP_OF_CAPTION = torch.arange(15) // 5
RELEVANT = CLIP_OF_CAPTION[:, None] == torch.arange(3)[None]  # (15 captions, 3 clips)


def test_caption_retrieval_on_three_clips_with_five_captions_each_by_hand():
    # caption_retrieval scores text @ audio.T: with the clips as unit vectors the text rows are the scores
    out = caption_retrieval(torch.eye(3, dtype=torch.float64), SCORES, RELEVANT)
    # t2a: the rank of each caption's clip in its row: A's 1,1,1,2,3; B's 1,2,2,1,3; C's 1,1,1,1,1.
    # R@1 = 10/15; with 3 clips R@5 = R@10 = 1; mAP@10 = mean of 1/rank = (23/6 + 20/6 + 30/6) / 15 = 73/90
    assert out["t2a_r@1"] == pytest.approx(10 / 15)
    assert out["t2a_r@5"] == out["t2a_r@10"] == 1.0
    assert out["t2a_map@10"] == pytest.approx(73 / 90)
    # a2t, each column ranked over the 15 captions:
    # A: c10 .95, c0 .90, c1 .80, c2 .70, c9, c6, c3 .30, c4 .20, ...: its captions at ranks 2, 3, 4, 7, 8
    #    -> found at 5 and 10 but not at 1; AP@10 = (1/2 + 2/3 + 3/4 + 4/7 + 5/8) / 5 = 523/840
    # B: c3, c4, c12, c13, c14 .36, c5 .33, c6 .28, c7 .25, c1, c8 .15, c9 .12, ...: its captions at 6, 7, 8, 10, 11
    #    -> two of them at different ranks inside the top 10, none in the top 5; AP@10 = (1/6 + 2/7 + 3/8 + 4/10) / 5
    #    = 1031/4200 (the caption at rank 11 counts in min(10, 5) but adds no precision)
    # C: its captions at ranks 1-5 -> AP@10 = 1
    assert out["a2t_r@1"] == pytest.approx(1 / 3)
    assert out["a2t_r@5"] == pytest.approx(2 / 3)
    assert out["a2t_r@10"] == 1.0
    assert out["a2t_map@10"] == pytest.approx((523 / 840 + 1031 / 4200 + 1) / 3)


def test_ties_rank_the_lower_result_index_first():
    # results 0 and 1 tie; the relevant one is result 1, so it ranks 2nd: R@1 = 0, AP@10 = 1/2
    scores = torch.tensor([[0.5, 0.5, 0.2]])
    assert retrieval_at_k(scores, torch.tensor([[False, True, False]])) == pytest.approx(
        {"r@1": 0.0, "r@5": 1.0, "r@10": 1.0, "map@10": 0.5}
    )
    # the same tie with the relevant result first: it ranks 1st
    assert retrieval_at_k(scores, torch.tensor([[True, False, False]]))["r@1"] == 1.0
    assert rank(torch.tensor([[0.1, 0.7, 0.7, 0.9, 0.7]])).tolist() == [[3, 1, 2, 4, 0]]


def test_scores_that_differ_only_beyond_float32_do_not_tie():
    # 1 and 1 + 1e-9 are one float32 value; in float64 the second is larger and ranks first
    scores = torch.tensor([[1.0, 1.0 + 1e-9]], dtype=torch.float64)
    assert retrieval_at_k(scores, torch.tensor([[False, True]]))["r@1"] == 1.0


def test_queries_without_a_relevant_result_are_left_out_and_none_at_all_is_zero():
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.4]])
    relevant = torch.tensor([[True, False], [False, False], [True, False]])
    # query 1 has nothing relevant: the mean is over queries 0 (hit at rank 1) and 2 (hit at rank 2)
    assert retrieval_at_k(scores, relevant, ks=(1,)) == pytest.approx({"r@1": 0.5, "map@10": 0.75})
    assert retrieval_at_k(scores, torch.zeros(3, 2, dtype=torch.bool)) == {
        "r@1": 0.0, "r@5": 0.0, "r@10": 0.0, "map@10": 0.0
    }  # fmt: skip
    with pytest.raises(ValueError, match=r"scores \(3, 2\) and relevant \(2, 2\): need one \(Q, N\) shape"):
        retrieval_at_k(scores, relevant[:2])


def test_map_at_another_depth_counts_only_that_head_of_the_ranking():
    # relevant results at ranks 3 and 7 of 12: AP@10 = (1/3 + 2/7) / 2; AP@5 sees only the first: (1/3) / 2
    scores = torch.linspace(1, 0, 12)[None]
    relevant = torch.zeros(1, 12, dtype=torch.bool)
    relevant[0, [2, 6]] = True
    assert retrieval_at_k(scores, relevant)["map@10"] == pytest.approx((1 / 3 + 2 / 7) / 2)
    assert retrieval_at_k(scores, relevant, ks=(1,), map_at=5) == pytest.approx({"r@1": 0.0, "map@5": 1 / 6})


def test_a_share_without_any_relevant_query_adds_zeros_and_counts_none():
    # what a DDP rank whose queries have no relevant result contributes to the all-reduce: zero sums, zero queries
    assert retrieval_sums(torch.rand(3, 4), torch.zeros(3, 4, dtype=torch.bool)) == (
        {"r@1": 0.0, "r@5": 0.0, "r@10": 0.0, "map@10": 0.0}, 0
    )  # fmt: skip


def test_caption_relevance_marks_each_clips_caption_row():
    # clips 0, 1, 2 carry captions 0, 2, 2 (clips 1 and 2 share one): 3 caption rows x 3 clips
    assert caption_relevance(torch.tensor([0, 2, 2]), 3).tolist() == [
        [True, False, False], [False, False, False], [False, True, True]
    ]  # fmt: skip


def test_the_across_ranks_reduction_sums_each_measure_and_the_query_count(monkeypatch):
    # the arithmetic of the reduction in one process: a stand-in all_reduce adds a second rank whose sums are twice
    # this rank's and whose query count is 1; the means are then (s + 2s) / (n + 1), measure by measure
    # (the real two-rank run over gloo is test_two_ranks_with_half_the_queries_each_get_the_mean_over_all)
    sums, count = retrieval_module.retrieval_sums(SCORES, RELEVANT)

    def other_rank_joins(totals):
        totals += torch.tensor([*(2 * v for v in sums.values()), 1.0], dtype=torch.float64)

    monkeypatch.setattr(retrieval_module, "rank_and_world", lambda: (0, 2))
    monkeypatch.setattr(retrieval_module.dist, "all_reduce", other_rank_joins)
    assert count == 15
    expected = {name: 3 * total / 16 for name, total in sums.items()}
    assert retrieval_at_k_across_ranks(SCORES, RELEVANT) == pytest.approx(expected)


def test_queries_ranked_in_chunks_give_the_same_means(monkeypatch):
    whole = caption_retrieval(torch.eye(3, dtype=torch.float64), SCORES, RELEVANT)
    monkeypatch.setattr(retrieval_module, "QUERY_CHUNK", 4)  # 15 caption queries in chunks of 4, 4, 4, 3
    assert caption_retrieval(torch.eye(3, dtype=torch.float64), SCORES, RELEVANT) == pytest.approx(whole)


def test_the_querying_table_shows_the_same_recall_and_map_under_its_own_names():
    row = retrieval_metrics(SCORES, RELEVANT, torch.arange(15))
    t2a = retrieval_at_k(SCORES, RELEVANT)
    assert {k: row[k] for k in ("recall@1", "recall@5", "recall@10", "map@10")} == pytest.approx(
        {"recall@1": t2a["r@1"], "recall@5": t2a["r@5"], "recall@10": t2a["r@10"], "map@10": t2a["map@10"]}
    )
    assert row["recall@1"] == pytest.approx(10 / 15) and row["map@10"] == pytest.approx(73 / 90)
    # the table ranks the scores it is given, not the float32 copy that torchmetrics' P@1 / R@1 / mAP need
    close = retrieval_metrics(torch.tensor([[1.0, 1.0 + 1e-9]], dtype=torch.float64), torch.tensor([[False, True]]),
                              torch.arange(1))  # fmt: skip
    assert close["recall@1"] == 1.0


def test_search_lists_equal_scores_in_index_order():
    model = audioclip.create_model("audioclip-tiny")
    vector = torch.nn.functional.normalize(torch.randn(model.config.embed_dim), dim=0)
    index = {"fingerprint": fingerprint(model), "checkpoint": "-", "paths": [f"clip{i}.wav" for i in range(40)],
             "modality": ["audio"] * 40, "labels": [""] * 40, "embeddings": vector.repeat(40, 1)}  # fmt: skip
    hits = search(index, model, text="anything", top=5)
    assert [hit.path for hit in hits] == [f"clip{i}.wav" for i in range(5)]


def _ddp_worker(rank_number: int, store: Path, out: Path) -> None:
    with gloo_group(rank_number, 2, store):
        mine = torch.arange(rank_number, 15, 2)  # each rank scores every other caption query
        torch.save(retrieval_at_k_across_ranks(SCORES[mine], RELEVANT[mine]), out / f"rank{rank_number}.pt")


@pytest.mark.ddp
def test_two_ranks_with_half_the_queries_each_get_the_mean_over_all(tmp_path):
    spawn(_ddp_worker, tmp_path, tmp_path)
    expected = {"r@1": 10 / 15, "r@5": 1.0, "r@10": 1.0, "map@10": 73 / 90}
    for rank_number in range(2):
        assert torch.load(tmp_path / f"rank{rank_number}.pt") == pytest.approx(expected), rank_number
