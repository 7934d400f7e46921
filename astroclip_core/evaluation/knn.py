"""Exact nearest neighbours and distance-weighted k-NN regression, in chunked numpy.

Contract of the weighting (the AstroCLIP choice, as scikit-learn's
``KNeighborsRegressor(weights="distance")``): the prediction is the mean of the k nearest bank
values weighted by 1/distance, with Euclidean distance. On L2-normalised embeddings the
Euclidean distance is ``sqrt(2 - 2 cos)``, so the neighbours are the k most cosine-similar bank
rows. When some neighbours lie at distance 0 (an exact copy of the query), only those count,
with equal weights, as scikit-learn does.

The k candidates are chosen in float32 (one matmul per chunk of queries) and their distances are
then recomputed in float64, so an exact copy really has distance 0 and 1/d never comes from
rounding noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Elements of one (queries x bank) similarity block: 2**24 float32 = 64 MiB.
CHUNK_ELEMENTS = 1 << 24
DEFAULT_K = 64


@dataclass(frozen=True, eq=False)
class Neighbours:
    """The k nearest bank rows of each query, nearest first."""

    index: np.ndarray  # (Q, k) int64 rows of the bank
    distance: np.ndarray  # (Q, k) float64 Euclidean distance


def l2_normalise(x: np.ndarray, name: str = "embeddings") -> np.ndarray:
    """Rows of ``x`` (N, D) scaled to unit L2 norm, as float32.

    Raises ValueError naming ``name`` when a row is non-finite or all zeros (no direction).
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a 2-d (N, D) array, got shape {x.shape}")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{name}: {int(bad.sum())} rows hold NaN or inf (first row {np.argmax(bad)})"
        )
    norm = np.linalg.norm(x, axis=1, keepdims=True)  # (N, 1)
    zero = norm[:, 0] == 0
    if zero.any():
        raise ValueError(
            f"{name}: {int(zero.sum())} rows are all zeros (first row {np.argmax(zero)})"
        )
    return x / norm


def _rows_per_chunk(n_bank: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(n_bank, 1))


def top_k_inner_product(
    query: np.ndarray, bank: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (Q, k) and scores (Q, k) of the k largest ``query @ bank.T`` per row, best first.

    Exact and chunked over queries so the (chunk, N_bank) block stays near 64 MiB.
    """
    query = np.asarray(query, dtype=np.float32)
    bank = np.asarray(bank, dtype=np.float32)
    n_bank = bank.shape[0]
    if not 1 <= k <= n_bank:
        raise ValueError(f"k={k} must lie in [1, {n_bank}] (the bank size)")
    if query.shape[1] != bank.shape[1]:
        raise ValueError(f"query dim {query.shape[1]} != bank dim {bank.shape[1]}")
    index = np.empty((query.shape[0], k), dtype=np.int64)
    score = np.empty((query.shape[0], k), dtype=np.float32)
    step = _rows_per_chunk(n_bank)
    for start in range(0, query.shape[0], step):
        block = query[start : start + step] @ bank.T  # (c, N_bank)
        if k < n_bank:
            part = np.argpartition(-block, k - 1, axis=1)[:, :k]  # (c, k), unordered
        else:
            part = np.broadcast_to(np.arange(n_bank), block.shape)
        part_score = np.take_along_axis(block, part, axis=1)
        order = np.argsort(-part_score, axis=1, kind="stable")
        index[start : start + step] = np.take_along_axis(part, order, axis=1)
        score[start : start + step] = np.take_along_axis(part_score, order, axis=1)
    return index, score


def nearest_neighbours(query: np.ndarray, bank: np.ndarray, k: int) -> Neighbours:
    """The k Euclidean-nearest bank rows of each query row, with float64 distances.

    ``argmin |q - b|^2 = argmax (q.b - |b|^2 / 2)``, so the search is one inner product on the
    bank augmented with the column ``-|b|^2 / 2`` and the queries with a column of ones.
    """
    query = np.asarray(query, dtype=np.float64)
    bank = np.asarray(bank, dtype=np.float64)
    half_sq = -0.5 * np.einsum("nd,nd->n", bank, bank)  # (N_bank,)
    bank_aug = np.hstack([bank, half_sq[:, None]])  # (N_bank, D + 1)
    query_aug = np.hstack([query, np.ones((query.shape[0], 1))])  # (Q, D + 1)
    index, _ = top_k_inner_product(query_aug, bank_aug, k)
    distance = np.empty(index.shape, dtype=np.float64)
    step = max(1, CHUNK_ELEMENTS // max(k * bank.shape[1], 1))
    for start in range(0, query.shape[0], step):
        diff = bank[index[start : start + step]] - query[start : start + step, None, :]  # (c, k, D)
        distance[start : start + step] = np.sqrt(np.einsum("ckd,ckd->ck", diff, diff))
    order = np.argsort(distance, axis=1, kind="stable")  # float64 may reorder near-ties
    return Neighbours(
        np.take_along_axis(index, order, axis=1), np.take_along_axis(distance, order, axis=1)
    )


def inverse_distance_weights(distance: np.ndarray) -> np.ndarray:
    """Normalised 1/d weights (Q, k); rows with exact matches (d == 0) weight only those."""
    exact = distance == 0.0  # (Q, k)
    with np.errstate(divide="ignore"):
        weights = np.where(
            exact.any(axis=1, keepdims=True), exact.astype(np.float64), 1.0 / distance
        )
    return weights / weights.sum(axis=1, keepdims=True)


def knn_regress(
    query: np.ndarray, bank: np.ndarray, bank_values: np.ndarray, k: int = DEFAULT_K
) -> np.ndarray:
    """Distance-weighted k-NN prediction of ``bank_values`` for each query row.

    ``query`` (Q, D) and ``bank`` (N, D) are compared as given: normalise embeddings first
    (:func:`l2_normalise`). ``bank_values`` is (N,) or (N, T); the result is (Q,) or (Q, T).
    """
    values = np.asarray(bank_values, dtype=np.float64)
    if values.shape[0] != np.shape(bank)[0]:
        raise ValueError(f"bank has {np.shape(bank)[0]} rows but bank_values {values.shape[0]}")
    if not np.isfinite(values).all():
        raise ValueError("bank_values hold NaN or inf; drop those bank rows first")
    nn = nearest_neighbours(query, bank, k)
    weights = inverse_distance_weights(nn.distance)  # (Q, k)
    neighbour_values = values[nn.index]  # (Q, k) or (Q, k, T)
    if values.ndim == 1:
        return np.einsum("qk,qk->q", weights, neighbour_values)
    return np.einsum("qk,qkt->qt", weights, neighbour_values)
