"""Evaluation and querying (Guzhov et al. 2021, sec. 4.4, Tables 2 and 4): zero-shot classification, cross-modal
querying P@1 / R@1 / mAP, a paper-style report, and an embedding index with exact cosine search for users."""

from audioclip.evaluation.datasets import DATASETS, EmbeddedSet, embed_dataset
from audioclip.evaluation.index import build_index, fingerprint, load_index, search
from audioclip.evaluation.query import query, retrieval_metrics
from audioclip.evaluation.zeroshot import class_text_embeddings, zeroshot

__all__ = [
    "DATASETS",
    "EmbeddedSet",
    "build_index",
    "class_text_embeddings",
    "embed_dataset",
    "fingerprint",
    "load_index",
    "query",
    "retrieval_metrics",
    "search",
    "zeroshot",
]
