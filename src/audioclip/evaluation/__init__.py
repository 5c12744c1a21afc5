"""Evaluation and querying (Guzhov et al. 2021, sec. 4.4, Tables 2 and 4): zero-shot classification, cross-modal
querying P@1 / R@1 / mAP, a paper-style report, and an embedding index with exact cosine search for users."""

from importlib import import_module

# imported on first use, so that `audioclip evaluate --help` does not load torch
_LAZY = {
    "DATASETS": "audioclip.evaluation.names",
    "EmbeddedSet": "audioclip.evaluation.embedded",
    "embed_dataset": "audioclip.evaluation.embedded",
    "build_index": "audioclip.evaluation.index",
    "fingerprint": "audioclip.evaluation.index",
    "load_index": "audioclip.evaluation.index",
    "search": "audioclip.evaluation.index",
    "query": "audioclip.evaluation.query",
    "retrieval_metrics": "audioclip.evaluation.query",
    "caption_retrieval": "audioclip.evaluation.retrieval",
    "retrieval_at_k": "audioclip.evaluation.retrieval",
    "class_text_embeddings": "audioclip.evaluation.zeroshot",
    "zeroshot": "audioclip.evaluation.zeroshot",
}

__all__ = [
    "DATASETS",
    "EmbeddedSet",
    "build_index",
    "caption_retrieval",
    "class_text_embeddings",
    "embed_dataset",
    "fingerprint",
    "load_index",
    "query",
    "retrieval_at_k",
    "retrieval_metrics",
    "search",
    "zeroshot",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'audioclip.evaluation' has no attribute {name!r}")
