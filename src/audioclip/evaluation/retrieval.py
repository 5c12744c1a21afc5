"""Retrieval measures: one ranking, one tie rule and one rule for queries without a relevant result, used by the
querying table, caption retrieval (AudioCaps, Clotho, caption manifests, fine-tuning on captions) and search.

For queries (rows of ``scores`` (Q, N)) and results (columns), with ``relevant`` (Q, N) saying which result is
relevant to which query, per query:

- ``r@k`` = 1 if at least one relevant result is among the top k, else 0: the R@k of audio-text retrieval (Kim et
  al. 2019, AudioCaps; Drossos et al. 2020, Clotho; LAION-CLAP, Wu et al. 2023, sec. 4), a hit rate;
- ``map@10`` = (1 / min(10, relevant results)) * sum over the ranks i <= 10 of P@i * rel(i), DCASE 2022 task 6b's
  mAP@10 (1 / rank of the one relevant result when there is one, 0 beyond rank 10);

and each measure is the mean over the queries. The two rules:

- **Ties**: results are ranked by descending score compared in float64 (float32 inputs are exact in it, so no two
  scores that differ in the input tie); equal scores keep the order of the results (the lower column index ranks
  first: ``torch.sort(..., stable=True)``). ``rank`` is that ranking, and search uses it too.
- **Queries without a relevant result** have no rank to score and are left out of every mean (never counted as 0);
  when no query has one, every mean is 0.0.

``retrieval_at_k`` averages the queries it is given; ``retrieval_at_k_across_ranks`` averages the queries of every DDP
rank (each passes its own share): the per-query sums and the count are all-reduced, so a rank that scores only its
share gets the mean over all of them.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from audioclip.process_group import rank_and_world

RECALL_AT = (1, 5, 10)
MAP_AT = 10
QUERY_CHUNK = 1024  # queries ranked at a time: Q x N float64 at once would be 3.2 GB for 20,000 x 20,000


def rank(scores: torch.Tensor, top: int | None = None) -> torch.Tensor:
    """The column indices of each row of ``scores`` (Q, N) from the best result down (the first ``top``), by the
    one tie rule: descending float64 score, equal scores in column order."""
    order = torch.sort(scores.double(), dim=-1, descending=True, stable=True).indices
    return order if top is None else order[..., :top]


def _per_query(hits: torch.Tensor, relevant_count: torch.Tensor, ks, map_at: int) -> dict[str, torch.Tensor]:
    """Each measure per query from ``hits`` (Q, depth): whether the result at each rank is relevant."""
    hits = hits.double()
    precision = hits.cumsum(1) / torch.arange(1, hits.shape[1] + 1, dtype=torch.float64)
    out = {f"r@{k}": hits[:, :k].amax(1) for k in ks}
    top = slice(0, map_at)
    out[f"map@{map_at}"] = (precision[:, top] * hits[:, top]).sum(1) / relevant_count.clamp(max=map_at)
    return out


def retrieval_sums(
    scores: torch.Tensor, relevant: torch.Tensor, ks=RECALL_AT, map_at: int = MAP_AT
) -> tuple[dict[str, float], int]:
    """(sum over the queries with a relevant result of each measure, how many such queries there are)."""
    if scores.shape != relevant.shape or scores.dim() != 2:
        raise ValueError(f"scores {tuple(scores.shape)} and relevant {tuple(relevant.shape)}: need one (Q, N) shape")
    relevant = relevant.bool()
    keep = relevant.any(1)
    scores, relevant = scores[keep], relevant[keep]
    depth = min(relevant.shape[1], max(*ks, map_at))  # R@k and mAP@k need only the head of the ranking
    sums: dict[str, float] = {}
    for start in range(0, len(scores), QUERY_CHUNK):
        rows = slice(start, start + QUERY_CHUNK)
        hits = torch.gather(relevant[rows], 1, rank(scores[rows], depth).to(relevant.device))
        count = relevant[rows].sum(1).double()
        for name, values in _per_query(hits, count, ks, map_at).items():
            sums[name] = sums.get(name, 0.0) + float(values.sum())
    if not sums:
        sums = dict.fromkeys(_per_query(torch.zeros(0, depth), torch.zeros(0), ks, map_at), 0.0)
    return sums, int(keep.sum())


def _means(sums: dict[str, float], count: float) -> dict[str, float]:
    return {name: total / count if count else 0.0 for name, total in sums.items()}


def retrieval_at_k(
    scores: torch.Tensor, relevant: torch.Tensor, ks=RECALL_AT, map_at: int = MAP_AT
) -> dict[str, float]:
    """Mean ``r@k`` for each k of ``ks`` and ``map@{map_at}`` over the queries (rows of ``scores`` (Q, N), relevance
    ``relevant`` (Q, N)) that have a relevant result."""
    return _means(*retrieval_sums(scores, relevant, ks, map_at))


def retrieval_at_k_across_ranks(
    scores: torch.Tensor, relevant: torch.Tensor, ks=RECALL_AT, map_at: int = MAP_AT
) -> dict[str, float]:
    """``retrieval_at_k`` over the queries of every DDP rank, each rank passing its own share of the queries; the
    same as ``retrieval_at_k`` in one process."""
    sums, count = retrieval_sums(scores, relevant, ks, map_at)
    if rank_and_world()[1] == 1:
        return _means(sums, count)
    totals = torch.tensor([*sums.values(), count], dtype=torch.float64)
    dist.all_reduce(totals)
    return _means(dict(zip(sums, totals[:-1].tolist(), strict=True)), float(totals[-1]))


def caption_relevance(caption_of_clip: torch.Tensor, num_captions: int) -> torch.Tensor:
    """(C, N) relevance of C captions to N clips when each clip has one caption (row ``caption_of_clip[n]``); a
    caption carried by several clips is relevant to each of them."""
    return torch.arange(num_captions, device=caption_of_clip.device)[:, None] == caption_of_clip[None]


def caption_retrieval(audio: torch.Tensor, text: torch.Tensor, relevant: torch.Tensor) -> dict[str, float]:
    """Text-to-audio (``t2a_*``) and audio-to-text (``a2t_*``) ``retrieval_at_k`` of unit-norm clip embeddings
    ``audio`` (N, D) and caption embeddings ``text`` (C, D), ``relevant`` (C, N) saying which caption describes
    which clip.

    The standard protocol (AudioCaps, Clotho): every caption is a text query whose relevant results are the clips
    it describes (one, for AudioCaps and Clotho), and every clip an audio query whose relevant results are its
    captions (five for Clotho), so a clip's a2t R@k is a hit when any of its captions is in its top k."""
    scores = text.double().cpu() @ audio.double().cpu().T
    relevant = relevant.cpu()
    t2a = retrieval_at_k(scores, relevant)
    a2t = retrieval_at_k(scores.T, relevant.T)
    return {**{f"t2a_{k}": v for k, v in t2a.items()}, **{f"a2t_{k}": v for k, v in a2t.items()}}
