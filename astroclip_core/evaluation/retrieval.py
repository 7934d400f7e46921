"""Cross-modal retrieval: where does each galaxy's own partner rank among all candidates?

Query row i and bank row i are the two modalities of one galaxy. Similarity is the cosine
(inner product of L2-normalised embeddings). The rank of the true partner is
``1 + #(candidates more similar) + #(other candidates exactly as similar)``: rank 1 means the
partner is the top hit, and ties count against the query, so degenerate (constant) embeddings
score rank N rather than a flattering rank 1. Random embeddings give a median rank near N/2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from astroclip_core.evaluation.knn import CHUNK_ELEMENTS, l2_normalise

RECALL_AT = (1, 5, 10)


@dataclass(frozen=True)
class RetrievalMetrics:
    """Recall@1/5/10 and the median rank of the true partner among ``n`` candidates."""

    recall_at_1: float
    recall_at_5: float
    recall_at_10: float
    median_rank: float
    n: int


def partner_ranks(query: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """Rank (1 = top hit) of bank row i among all bank rows for query row i; (N,) int64.

    ``query`` and ``bank`` are (N, D) and get L2-normalised here.
    """
    if np.shape(query) != np.shape(bank):
        raise ValueError(f"query {np.shape(query)} and bank {np.shape(bank)} must pair row by row")
    q = l2_normalise(query, "retrieval queries")
    b = l2_normalise(bank, "retrieval bank")
    n = q.shape[0]
    ranks = np.empty(n, dtype=np.int64)
    step = max(1, CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, n, step):
        stop = min(start + step, n)
        sim = q[start:stop] @ b.T  # (c, N)
        rows = np.arange(stop - start)
        own = sim[rows, np.arange(start, stop)][:, None]  # (c, 1) similarity to the partner
        better = (sim > own).sum(axis=1)
        tied = (sim == own).sum(axis=1) - 1  # minus the partner itself
        ranks[start:stop] = 1 + better + tied
    return ranks


def retrieval_metrics(query: np.ndarray, bank: np.ndarray) -> RetrievalMetrics:
    """Recall@1/5/10 (fraction with rank <= K) and median rank for paired rows."""
    ranks = partner_ranks(query, bank)
    if ranks.size == 0:
        raise ValueError("retrieval needs at least one pair")
    recall = {k: float(np.mean(ranks <= k)) for k in RECALL_AT}
    return RetrievalMetrics(
        recall_at_1=recall[1],
        recall_at_5=recall[5],
        recall_at_10=recall[10],
        median_rank=float(np.median(ranks)),
        n=int(ranks.size),
    )
