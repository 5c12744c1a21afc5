"""Cross-modal querying: P@1, R@1 and mAP (Guzhov et al. 2021, sec. 4.4, Table 4), Recall@1/5/10 and mAP@10.

Queries are either the unique label sets of the dataset, as text ("dog", or "Speech, Music" for a multi-label
AudioSet clip, formatted into the template), or the samples of one modality; results are the samples of another
modality (or the unique label sets, as text). A result is relevant to a query when its label set equals the
query's. Every query is scored against every result by cosine similarity; per query,

- P@1 = 1 if the top-ranked result is relevant, else 0;
- R@1 = (relevant results in the top 1) / (relevant results), so at most 1 / (number of relevant results);
- AP = the mean, over the relevant results, of the precision at the rank of each;

and, as the audio-text retrieval literature reports them (CLAP, WavCaps; CLIP's Recall@k),

- Recall@k = 1 if at least one relevant result is in the top k, else 0 (k = 1, 5, 10);
- AP@10 = (1 / min(10, relevant results)) * sum over the ranks i <= 10 of P@i * rel(i), which is 1 / rank of
  the relevant result when there is one (the DCASE audio retrieval mAP@10);

and each score is averaged over the queries that have at least one relevant result. P@1, R@1 and mAP are computed by
torchmetrics' ``RetrievalPrecision(top_k=1)``, ``RetrievalRecall(top_k=1)`` and ``RetrievalMAP`` with the query
number as ``indexes``; their states are concatenated across DDP ranks before ``compute``, so a rank that scores only
its share of the queries still gets the average over all of them. Recall@k and mAP@10, with their tie rule, are
`audioclip.evaluation.retrieval`'s (summed per rank and the sums all-reduced).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics.retrieval import RetrievalMAP, RetrievalPrecision, RetrievalRecall

from audioclip.evaluation.embedded import EmbeddedSet
from audioclip.evaluation.retrieval import MAP_AT, RECALL_AT, rank, retrieval_at_k_across_ranks
from audioclip.evaluation.zeroshot import class_text_embeddings
from audioclip.models import AudioCLIP
from audioclip.process_group import rank_and_world

RECALL_LEVELS = np.round(np.linspace(0.0, 1.0, 11), 2)  # the 11-point interpolated precision-recall curve


def retrieval_metrics(scores: torch.Tensor, relevant: torch.Tensor, query_index: torch.Tensor) -> dict[str, float]:
    """Mean P@1, R@1 and AP of the queries ``query_index`` (Q,) given their scores and relevance (Q, N).

    Under DDP every rank passes its own queries with their global numbers; the result is the average over the
    queries of every rank. Queries without a relevant result are left out (``empty_target_action="skip"``).
    """
    metrics = {
        "p@1": RetrievalPrecision(top_k=1, empty_target_action="skip"),
        "r@1": RetrievalRecall(top_k=1, empty_target_action="skip"),
        "map": RetrievalMAP(empty_target_action="skip"),
    }
    indexes = query_index[:, None].expand_as(scores).reshape(-1)
    # torchmetrics (1.9) counts a relevant result only where its score is > 0, and cosine similarities can be
    # negative: shift the scores above zero, which keeps every query's ranking
    shifted = scores.float() - scores.min() + 1.0
    out = {}
    for name, metric in metrics.items():
        metric.update(shifted.reshape(-1), relevant.reshape(-1).bool(), indexes=indexes.long())
        out[name] = float(metric.compute())
    # the unshifted scores: a float32 shift could round two close scores into a tie
    return {**out, **top_k_metrics(scores, relevant)}


def top_k_metrics(scores: torch.Tensor, relevant: torch.Tensor) -> dict[str, float]:
    """Recall@1/5/10 and mAP@10 (`audioclip.evaluation.retrieval`) over the queries of every DDP rank, under the
    names the querying table has always shown (``recall@k``: its ``r@1`` is the paper's R@1)."""
    scored = retrieval_at_k_across_ranks(scores, relevant, RECALL_AT, MAP_AT)
    return {name.replace("r@", "recall@") if name.startswith("r@") else name: v for name, v in scored.items()}


def precision_recall_curve(scores: torch.Tensor, relevant: torch.Tensor) -> dict[str, list[float]]:
    """The 11-point interpolated precision at recall 0, 0.1, ..., 1, averaged over queries with a relevant result."""
    hits = torch.gather(relevant.bool(), 1, rank(scores)).double().numpy()
    hits = hits[hits.sum(1) > 0]
    if not len(hits):
        return {"recall": RECALL_LEVELS.tolist(), "precision": [0.0] * len(RECALL_LEVELS)}
    found = hits.cumsum(1)
    precision = found / np.arange(1, hits.shape[1] + 1)
    recall = found / hits.sum(1, keepdims=True)
    # interpolated precision: the best precision at any recall >= the level
    best_after = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    curve = [
        float(np.mean([best_after[q, np.searchsorted(recall[q], level)] for q in range(len(hits))]))
        for level in RECALL_LEVELS
    ]
    return {"recall": RECALL_LEVELS.tolist(), "precision": curve}


def modalities_of(data: EmbeddedSet) -> tuple[str, ...]:
    return ("text", *data.embeddings)


def default_pairs(data: EmbeddedSet) -> list[tuple[str, str]]:
    """Every ordered pair of the dataset's modalities, text queries first (the paper's rows)."""
    mods = modalities_of(data)
    return [(q, r) for q in mods for r in mods if q != r]


def _side(model: AudioCLIP, data: EmbeddedSet, modality: str, templates: Sequence[str]):
    """(embeddings, label-set per item, label sets) of one side: the unique label sets as text, or the samples."""
    if modality not in modalities_of(data):
        raise ValueError(f"{data.dataset} has no {modality}; its modalities are {', '.join(modalities_of(data))}")
    if modality == "text":
        sets = sorted(set(data.labels))
        texts = [", ".join(data.class_names[i] for i in labels) for labels in sets]
        return class_text_embeddings(model, texts, templates), sets
    return data.embeddings[modality], data.labels


def query(
    model: AudioCLIP, data: EmbeddedSet, query_modality: str, result_modality: str, templates: Sequence[str] = ("{}",)
) -> dict:
    """P@1, R@1, mAP and the precision-recall curve of one query -> result modality pair (JSON-ready)."""
    if query_modality == result_modality:
        raise ValueError(f"query and result modality are both {query_modality}; pick two different ones")
    q_emb, q_labels = _side(model, data, query_modality, templates)
    r_emb, r_labels = _side(model, data, result_modality, templates)
    ids = {labels: i for i, labels in enumerate(sorted(set(q_labels) | set(r_labels)))}
    q_ids = torch.tensor([ids[x] for x in q_labels])
    r_ids = torch.tensor([ids[x] for x in r_labels])
    this_rank, world = rank_and_world()
    mine = torch.arange(this_rank, len(q_ids), world)  # this rank's share of the queries
    scores = q_emb[mine] @ r_emb.T
    metrics = retrieval_metrics(scores, q_ids[mine, None] == r_ids[None], mine)
    all_scores = q_emb @ r_emb.T
    return {
        "query": query_modality,
        "result": result_modality,
        "num_queries": len(q_ids),
        "num_results": len(r_ids),
        "num_queries_with_relevant": int((q_ids[:, None] == r_ids[None]).any(1).sum()),
        **metrics,
        "pr_curve": precision_recall_curve(all_scores, q_ids[:, None] == r_ids[None]),
    }
